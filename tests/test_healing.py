"""Total loss heals itself: the restore watcher rebuilds an empty cluster from the newest good snapshot."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CliRunner, start_stack, stop_stack
from vaultdr.agents import snapshot as snap
from vaultdr.agents.restore import RestoreRefused, RestoreSettings, plan_restore
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.healing import LocalRestoreTarget, restore_settings, run_restore
from vaultdr.envs.local.snapshots import snapshot_agent_for
from vaultdr.polling import wait_for

pytestmark = pytest.mark.stack


def lose_everything(env: LocalEnvironment) -> None:
    """Total loss: every node stopped, every data dir deleted, the nodes let back empty."""
    target = LocalRestoreTarget(env)
    for name in env.node_names():
        target.hold_node(name)
    for node in env.state.nodes:
        shutil.rmtree(node.data_dir)
    for name in env.node_names():
        target.release_node(name)


def upload_corrupt_copy(env: LocalEnvironment, good_key: str, *, truncate: bool) -> str:
    """A newer object carrying the good snapshot's metadata but damaged bytes."""
    admin = env.aws()
    bucket = env.state.aws["bucket"]
    body = admin.get_object(bucket, good_key)
    damaged = body[: len(body) // 2] if truncate else body[:100] + b"\x00garbage" + body[108:]
    stamp = "20991231T235959.000000Z" if truncate else "20991231T235958.000000Z"
    key = good_key.rsplit("/", 1)[0] + f"/{stamp}.snap"
    admin.put_object(bucket, key, damaged, metadata=admin.head_object(bucket, good_key))
    return key


# The supervisor's agent takes one snapshot when the stack comes up and then one an
# hour, so the snapshots these tests take are the newest ones.
QUIET_SNAPSHOTS = {
    "enabled": True,
    "interval": "1h",
    "bucket": "vaultdr-snapshots",
    "prefix": "snapshots",
    "retain": {"last": 10, "daily": 7},
}


@pytest.fixture(scope="module")
def healing_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnvironment]:
    env = start_stack(tmp_path_factory.mktemp("healing"), snapshots=QUIET_SNAPSHOTS)
    try:
        yield env
    finally:
        stop_stack(env)


def test_total_loss_is_restored_with_no_human_step_from_the_newest_good_snapshot(
    healing_stack: LocalEnvironment,
) -> None:
    env = healing_stack
    root = env.client(token=env.root_token())
    for i in range(25):
        root.write_kv("secret", f"before/{i}", {"value": f"v{i}"})
    root.write_kv("secret", "apps/web/config", {"db": "web-db"})
    good = snapshot_agent_for(env).take()
    root.write_kv("secret", "after/lost", {"value": "written after the snapshot"})
    corrupt = upload_corrupt_copy(env, good.key, truncate=False)
    truncated = upload_corrupt_copy(env, good.key, truncate=True)
    (env.state_dir / "agents/restore.json").unlink(missing_ok=True)

    lose_everything(env)

    def restored() -> bool:
        client = env.client(token=env.root_token())
        return client.read_kv("secret", "before/24") == {"value": "v24"}

    assert wait_for(restored, timeout=180, interval=0.2)
    # The first read works before the restore has finished: node 0 is sealed and unsealed
    # once more (to reload the raft keyring) before the others join. Wait for the record.
    assert wait_for(lambda: (env.state_dir / "agents/restore.json").exists(), timeout=120)
    client = env.client(token=env.root_token())
    assert all(client.read_kv("secret", f"before/{i}") == {"value": f"v{i}"} for i in range(25))
    assert client.read_kv("secret", "after/lost") is None  # written after the snapshot
    # The break-glass copy in SSM is the valid root token again.
    assert "root" in client.lookup_self()["policies"]
    # Configure ran: an app logs in through kubernetes auth and reads its secret.
    app = env.client().login_kubernetes(role="web", jwt=env.service_account_token("apps", "web"))
    assert env.client(token=app).read_kv("secret", "apps/web/config") == {"db": "web-db"}
    assert wait_for(lambda: env.status(quick=True).healthy, timeout=120)

    record = json.loads((env.state_dir / "agents" / "restore.json").read_text())
    assert record["snapshot_key"] == good.key
    assert record["snapshot_sha256"] == good.sha256
    skipped = {item["key"]: item["reason"] for item in record["skipped"]}
    assert "checksum mismatch" in skipped[corrupt]
    assert truncated in skipped
    assert {"initialized", "restored", "serving", "all-nodes-unsealed", "configured"} <= set(
        record["phases"]
    )


def test_a_restore_into_an_initialized_cluster_is_refused_and_changes_nothing(
    healing_stack: LocalEnvironment, cli: CliRunner
) -> None:
    env = healing_stack
    assert wait_for(lambda: env.status(quick=True).healthy, timeout=120)
    before = env.client(token=env.root_token()).read_health()["cluster_id"]
    for args in (("restore",), ("restore", "--dry-run"), ("restore", "--force")):
        result = cli(*args, state_dir=env.state_dir)
        assert result.returncode != 0
        assert "initialized" in result.stderr
    assert env.client(token=env.root_token()).read_health()["cluster_id"] == before
    with pytest.raises(RestoreRefused):
        run_restore(env)


def test_old_and_foreign_snapshots_are_refused_unless_forced(
    healing_stack: LocalEnvironment,
) -> None:
    env = healing_stack
    snapshot_agent_for(env).take()
    settings = restore_settings(env)
    aws = env.aws()

    def with_(**changes: object) -> RestoreSettings:
        return RestoreSettings(**{**settings.__dict__, **changes})  # type: ignore[arg-type]

    too_old = plan_restore(aws, with_(max_age=0.0))
    assert too_old.refused and "older than restore.max_age" in too_old.refused
    assert plan_restore(aws, with_(max_age=0.0), force=True).refused is None

    foreign = plan_restore(aws, with_(expected_cluster_id="another-cluster"))
    assert foreign.snapshot is None
    assert all("another cluster id" in item["reason"] for item in foreign.skipped)
    assert plan_restore(aws, with_(expected_cluster_id="another-cluster"), force=True).snapshot


def test_with_auto_restore_off_the_cluster_stays_empty_until_a_manual_restore(
    tmp_path: Path, cli: CliRunner
) -> None:
    env = start_stack(tmp_path, restore={"auto": False, "max_age": "1h"}, snapshots=QUIET_SNAPSHOTS)
    try:
        # The agent's first snapshot may land just after `up` returns.
        assert wait_for(lambda: (env.state_dir / "agents" / "snapshot.json").exists(), timeout=30)
        root = env.client(token=env.root_token())
        root.write_kv("secret", "manual/one", {"value": "1"})
        good = snapshot_agent_for(env).take()
        lose_everything(env)
        target = LocalRestoreTarget(env)
        assert wait_for(
            lambda: all(
                target.node_client(n).read_seal_status().get("initialized") is False
                for n in env.node_names()
            ),
            timeout=60,
        )
        dry = cli("restore", "--dry-run", state_dir=env.state_dir)
        assert dry.returncode == 0, dry.stderr
        assert f"restore {good.key}" in dry.stdout
        assert "nothing was changed" in dry.stdout
        assert all(
            target.node_client(n).read_seal_status().get("initialized") is False
            for n in env.node_names()
        )
        real = cli("restore", "--key", good.key, state_dir=env.state_dir)
        assert real.returncode == 0, real.stderr
        assert f"restored {good.key}" in real.stdout
        client = env.client(token=env.root_token())
        assert client.read_kv("secret", "manual/one") == {"value": "1"}
        assert wait_for(lambda: env.status(quick=True).healthy, timeout=120)
        listed = cli("snapshot", "list", state_dir=env.state_dir)
        assert good.key in listed.stdout
        verified = cli("snapshot", "verify", good.key, state_dir=env.state_dir)
        assert verified.returncode == 0 and "OK" in verified.stdout
        texts = dry.stdout + dry.stderr + real.stdout + real.stderr
        assert env.root_token() not in texts
        assert not any(key in texts for key in env.recovery_keys())
    finally:
        stop_stack(env)


def test_snapshot_verify_fails_on_a_corrupt_object(
    healing_stack: LocalEnvironment, cli: CliRunner
) -> None:
    env = healing_stack
    good = snapshot_agent_for(env).take()
    bad = upload_corrupt_copy(env, good.key, truncate=False)
    result = cli("snapshot", "verify", bad, state_dir=env.state_dir)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stdout
    newest, skipped = snap.latest_verified(
        env.aws(), env.state.aws["bucket"], "snapshots", env.state_dir / "agents" / "tmp"
    )
    assert newest is not None and newest.key != bad
    assert bad in {item.key for item in skipped}
