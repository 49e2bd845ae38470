"""stack.yaml validation: bad input is named precisely, good input parses."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultdr.cli import main
from vaultdr.config import load_stack, parse_duration, parse_stack
from vaultdr.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_local_stack_parses() -> None:
    stack = load_stack(REPO / "environments/local/stack.yaml")
    assert stack.nodes == 3
    assert stack.seal.type == "awskms"
    assert stack.raft.performance_multiplier == 1
    assert stack.snapshots.interval == 60
    assert "web" in stack.configure.auth.kubernetes.roles  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("24h", 86400), ("7d", 604800), ("250ms", 0.25), (90, 90)],
)
def test_durations_are_read_in_every_unit(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_a_misspelt_field_is_named_with_its_path_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "stack.yaml"
    bad.write_text("seal:\n  tpye: awskms\n")
    with pytest.raises(ConfigError) as err:
        load_stack(bad)
    assert "seal.tpye: unknown field" in str(err.value)
    assert str(bad) in str(err.value)


def test_an_unknown_seal_type_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"seal\.type"):
        parse_stack({"seal": {"type": "pkcs11"}})


def test_a_bad_duration_says_what_it_expects() -> None:
    with pytest.raises(ConfigError, match=r"snapshots\.interval.*duration like"):
        parse_stack({"snapshots": {"interval": "soon"}})


def test_recovery_threshold_above_shares_is_refused() -> None:
    with pytest.raises(ConfigError, match="recovery_threshold"):
        parse_stack({"init": {"recovery_shares": 1, "recovery_threshold": 2}})


def test_yaml_syntax_errors_give_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "stack.yaml"
    bad.write_text("nodes: 3\nseal: [awskms\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_stack(bad)


def test_a_top_level_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_stack(["nodes", 3])


def test_the_cli_exits_non_zero_on_a_malformed_stack_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "stack.yaml"
    bad.write_text("nodes: three\n")
    state = tmp_path / "state"
    code = main(["up", "--config", str(bad), "--state-dir", str(state)])
    assert code == 2
    assert "nodes:" in capsys.readouterr().err
    assert not state.exists()


def test_a_missing_config_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["up", "--config", str(tmp_path / "nope.yaml"), "--state-dir", str(tmp_path)])
    assert code == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (
            {"objectives": {"rto": {"leader-los": "15s"}}},
            "objectives.rto",
            "did you mean 'leader-loss'",
        ),
        ({"nodes": True}, "nodes", "valid integer"),
        ({"nodes": "3"}, "nodes", "valid integer"),
        ({"snapshots": {"interval": 0}}, "snapshots.interval", "greater than 0"),
        ({"snapshots": {"interval": "400d"}}, "snapshots.interval", "less than or equal"),
        ({"restore": {"watch_interval": "0s"}}, "restore.watch_interval", "greater than 0"),
        ({"startup_timeout": 0}, "startup_timeout", "greater than 0"),
        ({"snapshots": {"prefix": "../../etc"}}, "snapshots.prefix", "no '.' or '..' parts"),
        ({"snapshots": {"prefix": "/abs"}}, "snapshots.prefix", "leading or trailing"),
        ({"snapshots": {"bucket": "Not_A_Bucket"}}, "snapshots.bucket", "bucket name"),
        ({"snapshots": {"retain": {"last": 1.5}}}, "snapshots.retain.last", "valid integer"),
        ({"objectives": {"rto": {"total-loss": "0s"}}}, "objectives.rto.total-loss", "greater"),
    ],
)
def test_a_field_that_would_silently_weaken_a_drill_is_refused_by_name(
    data: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_stack(data)
    assert f"{field}:" in str(err.value)
    assert words in str(err.value)


def test_an_rto_table_that_names_some_scenarios_keeps_the_others() -> None:
    stack = parse_stack({"objectives": {"rto": {"leader-loss": "5s"}}})
    assert stack.objectives.rto["leader-loss"] == 5
    assert stack.objectives.rto["total-loss"] == 60  # not dropped: still judged


def test_a_binary_stack_file_is_bad_input_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "stack.yaml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    assert main(["drill", "--dry-run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a text file" in err and "Traceback" not in err
