"""Generated bad input for the CLI's entry points: every answer is a code from the table in
``vaultdr.errors``, and none is a traceback or an "internal error".

Hypothesis writes stack.yaml documents, Chaos Toolkit experiments, state files and rollback
journals (random bytes, random YAML/JSON trees, and the shipped files with one field
replaced) and hands them to the real CLI (``vaultdr.cli.main``, in this process). Only
commands that cannot start a stack or touch a process are used: ``drill --dry-run``
(which reads and validates the stack), ``status``, ``rollback``, ``chaos run`` without a
stack, and ``fault inject`` without a stack.
"""

from __future__ import annotations

import json
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import LOCAL_STACK, REPO
from vaultdr import statedir
from vaultdr.cli import main
from vaultdr.errors import EXIT_CODES

CODES = {code for code, _ in EXIT_CODES}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["0", "0s", "-5s", "1e9d", "../../etc", "nan", "3", "true", "30s", ""]),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=12,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _replaced(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy: Any = json.loads(json.dumps(data))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return copy


SHIPPED_STACK = yaml.safe_load(LOCAL_STACK.read_text())
SHIPPED_EXPERIMENT = json.loads((REPO / "drills" / "kill-leader.json").read_text())


@st.composite
def one_field_changed(draw: st.DrawFn, document: Any) -> Any:
    paths = _paths(document)
    path = draw(st.sampled_from(paths))
    return _replaced(document, path, draw(trees))


def as_bytes(kind: str) -> st.SearchStrategy[bytes]:
    """Raw bytes, a random tree, or the shipped document with one field replaced."""
    shipped = SHIPPED_STACK if kind == "yaml" else SHIPPED_EXPERIMENT

    def dump(value: Any) -> bytes:
        if kind == "yaml":
            return yaml.safe_dump(value, allow_unicode=True).encode()
        return json.dumps(value).encode()

    return st.one_of(
        st.binary(max_size=200),
        trees.map(dump),
        one_field_changed(shipped).map(dump),
        st.binary(max_size=40).map(lambda junk: dump(shipped)[:-20] + junk),  # truncated
    )


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    """main() installs SIGTERM/SIGHUP handlers; give the test process its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> int:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code in CODES, (argv, code, err)
    assert "Traceback" not in out + err, err
    assert "internal error" not in err, err
    return code


@FUZZ
@given(document=as_bytes("yaml"))
def test_any_stack_yaml_gets_an_exit_code_from_the_table(
    capsys: pytest.CaptureFixture[str], document: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "stack.yaml"
        config.write_bytes(document)
        run_cli(capsys, "drill", "--dry-run", "--config", str(config))
        assert config.read_bytes() == document  # input is never changed


@FUZZ
@given(document=as_bytes("json"))
def test_any_experiment_gets_an_exit_code_from_the_table(
    capsys: pytest.CaptureFixture[str], document: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        experiment = Path(tmp) / "experiment.json"
        experiment.write_bytes(document)
        run_cli(capsys, "chaos", "run", str(experiment), "--state-dir", str(Path(tmp) / "none"))


state_documents = st.one_of(
    st.binary(max_size=200),
    trees.map(lambda value: json.dumps(value).encode()),
    st.just(b""),
    st.dictionaries(
        st.sampled_from(["directory", "cluster", "nodes", "ca_file", "processes", "aws", "seal"]),
        trees,
        max_size=7,
    ).map(lambda value: json.dumps(value).encode()),
)


@FUZZ
@given(document=state_documents)
def test_any_state_file_gets_an_exit_code_from_the_table(
    capsys: pytest.CaptureFixture[str], document: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        statedir.write_marker(state, purpose="fuzz")
        (state / "state.json").write_bytes(document)
        for argv in (["status"], ["fault", "inject", "kill-node", "0"]):
            run_cli(capsys, *argv, "--state-dir", str(state))
        assert (state / "state.json").read_bytes() == document


undo_steps = st.fixed_dictionaries(
    {"kind": st.sampled_from(["restore-kms", "thaw-node", "release-nodes", "bogus"])},
    optional={"node": trees, "nodes": trees, "pid": trees, "bucket": trees, "key": trees},
)
journal_entries = st.fixed_dictionaries(
    {
        "id": st.text(max_size=12),
        "fault": st.sampled_from(["revoke-kms", "freeze-node", "delete-volume", "nope"]),
        "status": st.sampled_from(["acting", "injected", "undo-failed", "done", "??"]),
        "undo": st.lists(undo_steps, max_size=3),
    },
    optional={"args": trees, "started_at": trees, "mono": trees, "detail": trees},
)
journals = st.one_of(
    st.binary(max_size=300),
    trees.map(lambda value: json.dumps(value).encode()),
    st.lists(journal_entries, max_size=4).map(
        lambda entries: json.dumps({"entries": entries}).encode()
    ),
)


@FUZZ
@given(document=journals)
def test_any_journal_gets_an_exit_code_from_the_table(
    capsys: pytest.CaptureFixture[str], document: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        statedir.write_marker(state, purpose="fuzz")
        (state / "rollback-journal.json").write_bytes(document)
        run_cli(capsys, "rollback", "--state-dir", str(state))
