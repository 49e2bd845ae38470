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
