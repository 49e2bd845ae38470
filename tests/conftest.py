"""Shared fixtures: real local stacks (bao, moto, the Kubernetes API stand-in), always torn down."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fake_kube import FakeCluster, FakeKubeApi
from vaultdr.config import Stack, load_stack
from vaultdr.envs.local.env import LocalEnvironment

pytest_plugins = ["pytester"]  # the step library is tested on generated feature files

REPO = Path(__file__).resolve().parent.parent
LOCAL_STACK = REPO / "environments/local/stack.yaml"


def stack_with(tmp: Path, **overrides: object) -> tuple[Stack, Path]:
    """The shipped local stack with top-level fields replaced, written to ``tmp``."""
    import yaml

    data = yaml.safe_load(LOCAL_STACK.read_text())
    data.update(overrides)
    path = tmp / "stack.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_stack(path), path


def start_stack(tmp: Path, **overrides: object) -> LocalEnvironment:
    stack, path = stack_with(tmp, **overrides)
    env = LocalEnvironment(tmp / "state", stack, stack_file=str(path))
    try:
        env.up()
    except BaseException:
        if (tmp / "state" / "state.json").exists():
            env.down()
        raise
    return env


def stop_stack(env: LocalEnvironment) -> None:
    if (env.state_dir / "state.json").exists():
        env.down()


@pytest.fixture(scope="session")
def awskms_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnvironment]:
    """One awskms-sealed stack shared by the tests that leave it healthy."""
    env = start_stack(tmp_path_factory.mktemp("awskms"))
    try:
        yield env
    finally:
        stop_stack(env)


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli() -> CliRunner:
    """Run the real ``vaultdr`` CLI in a subprocess; returns the completed process."""

    def run(
        *args: str, state_dir: Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "vaultdr.cli", *args]
        if state_dir is not None:
            argv += ["--state-dir", str(state_dir)]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
        )

    return run


# --- the fake Kubernetes API (tests/fake_kube.py) ---------------------------------------------------
@pytest.fixture
def cluster() -> FakeCluster:
    """A populated fake cluster (namespace ``vaultdr``); a test module may override it."""
    fake = FakeCluster(namespace="vaultdr")
    fake.populate()
    return fake


@pytest.fixture
def kube_api(cluster: FakeCluster) -> Iterator[FakeKubeApi]:
    """``cluster`` served over HTTP on loopback, stopped after the test."""
    api = FakeKubeApi(cluster)
    yield api
    api.stop()
