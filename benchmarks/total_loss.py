"""Total loss: vaultdr's auto-restore against the seeds' restore procedure, in one run.

Measured for each size N (``--secrets 1000 10000`` by default, ``--quick`` for
200): the time from the moment every node's data is gone until the cluster is
*usable again*, i.e. in one poll (every 50 ms, at most 300 s):

- a sample of the N secrets (the first, the last and 20 random ones) reads
  back with the root token from SSM (the restored cluster's), and
- a kubernetes login as ``apps/web`` (role ``web``) succeeds and its token
  reads ``secret/apps/web/config``.

Afterwards, untimed: every one of the N secrets is read back (missing ones are
reported) and each node is asked to serve a read by itself (standbys forward).

**vaultdr** (stack 1, ``environments/local/stack.yaml``, ``restore.auto: true``):
``vaultdr up``, N kv-v2 secrets, one snapshot from the snapshot agent; then
total loss: hold every node, delete every data dir (t0), release them. Nobody
acts but the supervisor, which brings the nodes back empty, and its restore
watcher, which finds the cluster empty and restores the newest good snapshot.

**The seeds** (stack 2, the same stack.yaml with ``restore.auto: false``,
started after stack 1 is down, so the two never share the 2 cores): the same N
secrets and a snapshot from its own agent, the same total loss, then at once
the seeds' restore Job as ``bao`` CLI subprocesses: wait until node 0 answers,
``bao operator init -recovery-shares=3 -recovery-threshold=2``, list S3 and
download the newest object, ``bao operator raft snapshot restore -force`` with
the fresh init's root token (retried until the fresh node accepts it, as the
Job's retries would). Nothing is done about the other nodes, which the
supervisor brings back empty, nor about the kubernetes auth config (the seeds
do not re-run configure; the stand-in is the same host here, so the restored
config still points at a live one).

Why not literally the same snapshot file: each stack's emulator has its own KMS
key, and a snapshot is sealed by the seal of the cluster it came from, so stack
1's snapshot cannot be unsealed by stack 2. The seeds' run therefore restores
stack 2's own snapshot, of the same content (the same N secrets, the same
configuration) and the same size class; both sizes are printed.

Usage: python benchmarks/total_loss.py [--secrets N ...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaultdr.config import load_stack
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.healing import LocalRestoreTarget
from vaultdr.envs.local.processes import pid_alive
from vaultdr.envs.local.snapshots import snapshot_agent_for
from vaultdr.errors import VaultdrError
from vaultdr.vault import VaultClient

REPO = Path(__file__).resolve().parent.parent
STACK_FILE = REPO / "environments/local/stack.yaml"
MOUNT = "secret"
WEB_SECRET = "apps/web/config"
WRITERS = 8
SAMPLE_RANDOM = 20
POLL_SECONDS = 0.05
READY_TIMEOUT = 300.0
NODE_SERVE_TIMEOUT = 30.0
GOAL_SECONDS = 10.0


def secret_path(i: int) -> str:
    return f"bench/{i}"


def secret_value(i: int) -> dict[str, Any]:
    return {"n": str(i), "value": f"benchmark secret number {i}"}


# --- stacks ---------------------------------------------------------------------------
def seeds_stack_file(work: Path) -> Path:
    """stack.yaml with ``restore: {auto: false, max_age: 24h}``: the seeds have no watcher."""
    data = yaml.safe_load(STACK_FILE.read_text())
    data["restore"] = {"auto": False, "max_age": "24h"}
    path = work / "stack-seeds.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_stack(state_dir: Path, stack_file: Path) -> LocalEnvironment:
    env = LocalEnvironment(state_dir, load_stack(stack_file), stack_file=str(stack_file))
    status = env.up()
    assert status.healthy, f"vaultdr up left an unhealthy stack in {state_dir}"
    return env


def our_pids(env: LocalEnvironment) -> list[tuple[int, int | None]]:
    """Pid and start time of every process of the stack (to prove they are gone later)."""
    return [(r.pid, r.start_time) for r in env.running_processes()]


def write_secrets(env: LocalEnvironment, root: str, count: int) -> float:
    """Write ``count`` kv-v2 secrets with ``WRITERS`` threads; the seconds it took."""
    address = env.client().address
    local = threading.local()

    def write(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = VaultClient(address, ca_file=env.ca_file(), token=root)
        client.write_kv(MOUNT, secret_path(i), secret_value(i))

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(pool.map(write, range(count)))
    env.client(token=root).write_kv(MOUNT, WEB_SECRET, {"db_password": "benchmark"})
    return time.monotonic() - start


def prepare(env: LocalEnvironment, count: int) -> dict[str, Any]:
    """Secrets in, one snapshot out: what the restore will bring back."""
    root = env.root_token()
    wrote = write_secrets(env, root, count)
    record = snapshot_agent_for(env).take()
    print(
        f"    wrote {count} secrets in {wrote:.1f} s; snapshot {record.key} "
        f"({record.size} bytes, raft index {record.raft_index})",
        flush=True,
    )
    return {"root": root, "key": record.key, "size": record.size}


def total_loss(env: LocalEnvironment) -> float:
    """Hold every node, delete every data dir, release them; t0 = the last data dir gone."""
    target = LocalRestoreTarget(env)
    names = env.node_names()
    for name in names:
        target.hold_node(name)
    for node in env.state.nodes:
        record = node.process()
        assert record is None or not record.alive(), f"{node.name} still runs"
    for node in env.state.nodes:
        shutil.rmtree(node.data_dir)
    t0 = time.monotonic()
    for name in names:
        target.release_node(name)
    return t0


# --- readiness ----------------------------------------------------------------------------
@dataclass
class Readiness:
    """Seconds after t0 at which each part first held (None: never within the timeout)."""

    ready: float | None = None
    secrets: float | None = None
    login: float | None = None
    last_error: str = ""


class ReadinessProbe:
    """Sample secrets read with the root token, and a kubernetes login that reads its secret."""

    def __init__(self, env: LocalEnvironment, root: str, count: int) -> None:
        self.env = env
        self.root = root
        self.jwt = env.service_account_token("apps", "web")
        rng = random.Random(count)
        middle = rng.sample(range(1, count - 1), min(SAMPLE_RANDOM, max(0, count - 2)))
        self.sample = [0, count - 1, *middle]

    def secrets_ok(self) -> bool:
        client = self.env.client(token=self.root)
        return all(
            (client.read_kv(MOUNT, secret_path(i)) or {}).get("n") == str(i) for i in self.sample
        )

    def login_ok(self) -> bool:
        client = self.env.client()
        token = client.login_kubernetes(role="web", jwt=self.jwt)
        return bool(client.with_token(token).read_kv(MOUNT, WEB_SECRET))

    def wait(self, t0: float, timeout: float = READY_TIMEOUT) -> Readiness:
        result = Readiness()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            # A request may block while the server restores (it holds its state lock), so
            # each part counts from when its check *returned*, not from when it was sent.
            secrets = self._holds(self.secrets_ok, result)
            if secrets and result.secrets is None:
                result.secrets = time.monotonic() - t0
            login = self._holds(self.login_ok, result)
            if login and result.login is None:
                result.login = time.monotonic() - t0
            if secrets and login:
                result.ready = time.monotonic() - t0
                return result
            time.sleep(POLL_SECONDS)
        return result

    @staticmethod
    def _holds(check: Callable[[], bool], result: Readiness) -> bool:
        try:
            return check()
        except (VaultdrError, KeyError, OSError) as exc:
            result.last_error = str(getattr(exc, "message", exc))[:200]
            return False


def missing_secrets(env: LocalEnvironment, root: str, count: int) -> list[int]:
    """Every secret read back through the active node; the indexes that did not come back."""
    address = env.client().address
    local = threading.local()

    def absent(i: int) -> bool:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = VaultClient(address, ca_file=env.ca_file(), token=root)
        for _ in range(3):
            try:
                return (client.read_kv(MOUNT, secret_path(i)) or {}).get("n") != str(i)
            except VaultdrError:
                time.sleep(0.5)
        return True

    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        flags = list(pool.map(absent, range(count)))
    return [i for i, gone in enumerate(flags) if gone]


def node_serving(env: LocalEnvironment, root: str, t0: float) -> dict[str, str]:
    """Per node: does it serve a read by itself (a standby forwards), and when, after t0."""

    def probe(name: str) -> str:
        client = env.client(name, token=root)
        deadline = time.monotonic() + NODE_SERVE_TIMEOUT
        error = ""
        while time.monotonic() < deadline:
            try:
                if (client.read_kv(MOUNT, secret_path(0)) or {}).get("n") == "0":
                    return f"serves (at {time.monotonic() - t0:.1f} s)"
            except VaultdrError as exc:
                error = exc.message
            time.sleep(0.2)
        return f"NOT serving after {NODE_SERVE_TIMEOUT:.0f} more s: {error[:160]}"

    names = env.node_names()
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return dict(zip(names, pool.map(probe, names), strict=True))


# --- vaultdr's run --------------------------------------------------------------------------
@dataclass
class RunResult:
    ready: Readiness
    missing: list[int]
    nodes: dict[str, str]
    snapshot_key: str
    snapshot_size: int
    steps: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def restore_events(env: LocalEnvironment, t0: float) -> dict[str, float]:
    """The restore watcher's events from events.jsonl, as seconds after t0 (same clock)."""
    steps: dict[str, float] = {}
    events = env.state_dir / "events.jsonl"
    for line in events.read_text().splitlines():
        event = json.loads(line)
        kind = str(event.get("event", ""))
        mono = float(event.get("mono", 0.0))
        if mono < t0:
            continue
        if kind.startswith("restore-") and kind not in steps:
            steps[kind] = round(mono - t0, 3)
        elif kind == "node-started" and f"started {event['node']}" not in steps:
            steps[f"started {event['node']}"] = round(mono - t0, 3)
    return steps


def wait_restore_record(env: LocalEnvironment, timeout: float = 180.0) -> dict[str, Any] | None:
    path = env.state_dir / "agents" / "restore.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        time.sleep(0.2)
    return None


def run_vaultdr(work: Path, count: int) -> tuple[RunResult, dict[str, Any] | None]:
    env = start_stack(work / "vaultdr", STACK_FILE)
    pids = our_pids(env)
    try:
        prep = prepare(env, count)
        probe = ReadinessProbe(env, prep["root"], count)
        t0 = total_loss(env)
        ready = probe.wait(t0)
        record = wait_restore_record(env)
        steps = restore_events(env, t0)
        nodes = node_serving(env, prep["root"], t0)
        missing = missing_secrets(env, prep["root"], count)
        result = RunResult(ready, missing, nodes, prep["key"], prep["size"], steps)
        if record is None:
            result.notes.append("agents/restore.json never appeared")
        elif record.get("snapshot_key") != prep["key"]:
            result.notes.append(f"the watcher restored {record.get('snapshot_key')}, not ours")
        error = env.state_dir / "agents" / "restore-error.json"
        if error.exists():
            result.notes.append(f"restore-error.json: {error.read_text()[:300]}")
        return result, record
    finally:
        env.down()
        leftover_check(pids)


# --- the seeds' run ------------------------------------------------------------------------
class BaoCli:
    """The ``bao`` binary as the seeds' Job runs it: BAO_ADDR and BAO_CACERT, node 0."""

    def __init__(self, env: LocalEnvironment) -> None:
        self.binary = env.state.binary
        base = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        base["BAO_ADDR"] = env.state.nodes[0].api_addr
        base["BAO_CACERT"] = str(env.ca_file())
        self.env = base

    def run(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, BAO_TOKEN=token) if token else self.env
        return subprocess.run(
            [self.binary, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )


def seeds_restore(env: LocalEnvironment, t0: float, work: Path) -> dict[str, float]:
    """The seeds' restore Job, step by step; each step's end as seconds after t0."""
    bao = BaoCli(env)
    steps: dict[str, float] = {}

    def mark(name: str) -> None:
        steps[name] = round(time.monotonic() - t0, 3)

    while bao.run("status", "-format=json").returncode not in (0, 2):
        if time.monotonic() - t0 > READY_TIMEOUT:
            raise RuntimeError("seeds: node 0 never answered")
        time.sleep(POLL_SECONDS)
    mark("node 0 answers")
    init = bao.run(
        "operator", "init", "-recovery-shares=3", "-recovery-threshold=2", "-format=json"
    )
    if init.returncode != 0:
        raise RuntimeError(f"seeds: operator init failed: {init.stderr.strip()[:300]}")
    fresh_root = str(json.loads(init.stdout)["root_token"])
    mark("initialized")
    aws = env.aws()
    bucket = str(env.state.aws["bucket"])
    objects = aws.list_objects(bucket, env.stack_config().snapshots.prefix)
    newest = max(objects, key=lambda o: (o["last_modified"], o["key"]))
    local = work / "seeds-restore.snap"
    local.write_bytes(aws.get_object(bucket, newest["key"]))
    mark("downloaded")
    attempts = 0
    while True:
        attempts += 1
        done = bao.run(
            "operator", "raft", "snapshot", "restore", "-force", str(local), token=fresh_root
        )
        if done.returncode == 0:
            break
        if time.monotonic() - t0 > READY_TIMEOUT:
            raise RuntimeError(f"seeds: snapshot restore kept failing: {done.stderr.strip()[:300]}")
        time.sleep(0.2)
    mark("restore accepted")
    steps["restore attempts"] = attempts
    return steps


def run_seeds(work: Path, count: int) -> RunResult:
    env = start_stack(work / "seeds", seeds_stack_file(work))
    pids = our_pids(env)
    try:
        prep = prepare(env, count)
        probe = ReadinessProbe(env, prep["root"], count)
        t0 = total_loss(env)
        result = RunResult(Readiness(), [], {}, prep["key"], prep["size"])
        # The readiness poll runs beside the Job, as it does for vaultdr's watcher.
        outcome: dict[str, Readiness] = {}
        poller = threading.Thread(target=lambda: outcome.update(r=probe.wait(t0)), daemon=True)
        poller.start()
        try:
            result.steps = seeds_restore(env, t0, work)
        except (RuntimeError, VaultdrError) as exc:
            result.notes.append(str(getattr(exc, "message", exc)))
        poller.join(READY_TIMEOUT + 30)
        result.ready = outcome.get("r", Readiness(last_error="readiness poll did not finish"))
        result.nodes = node_serving(env, prep["root"], t0)
        if result.ready.secrets is not None:
            result.missing = missing_secrets(env, prep["root"], count)
        return result
    finally:
        env.down()
        leftover_check(pids)


# --- reporting ------------------------------------------------------------------------------
def leftover_check(pids: Iterable[tuple[int, int | None]]) -> None:
    alive = [pid for pid, started in pids if pid_alive(pid, started)]
    if alive:
        print(f"    WARNING: processes of the stack still alive after down: {alive}")


def describe(result: RunResult) -> str:
    r = result.ready
    if r.ready is not None:
        return f"{r.ready:.2f}"
    if r.secrets is not None and r.login is None:
        return "login never worked"
    return "never ready"


def print_run(label: str, result: RunResult, count: int) -> None:
    r = result.ready

    def seconds(value: float | None) -> str:
        return f"{value:.2f} s" if value is not None else "never"

    print(f"  {label}: snapshot {result.snapshot_key} ({result.snapshot_size} bytes)")
    print(
        f"    usable after {describe(result)}; sample secrets readable at {seconds(r.secrets)}, "
        f"kubernetes login + read at {seconds(r.login)}"
    )
    if r.ready is None and r.last_error:
        print(f"    last error: {r.last_error}")
    steps = ", ".join(f"{k} {v}" for k, v in result.steps.items())
    if steps:
        print(f"    steps after t0: {steps}")
    lost = f"{len(result.missing)} of {count} missing" if result.missing else f"all {count} back"
    if result.missing:
        lost += f" (first: {result.missing[:10]})"
    print(f"    all secrets read back: {lost}")
    for name, state in result.nodes.items():
        print(f"    {name}: {state}")
    for note in result.notes:
        print(f"    NOTE: {note}")


def print_phases(record: dict[str, Any] | None) -> None:
    if record is None:
        print("  restore.json: missing")
        return
    phases = record.get("phases", {})
    previous = 0.0
    parts = []
    for name, at in sorted(phases.items(), key=lambda item: float(item[1])):
        parts.append(f"{name} {at:.2f} (+{at - previous:.2f})")
        previous = at
    print(f"  restore.json phases (s since restore start): {', '.join(parts)}")
    print(
        f"  restore.json total {record.get('total_seconds')} s, "
        f"configure changes {record.get('configure_changes')}, "
        f"snapshot age {record.get('snapshot_age_seconds')} s"
    )


def ratio(a: RunResult, b: RunResult) -> str:
    if a.ready.ready is None or b.ready.ready is None:
        return "n/a"
    return f"{a.ready.ready / b.ready.ready:.2f}"


def our_leftovers(prefix: str) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-af", "bao server|vaultdr.envs.local.emulator"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line for line in found.stdout.splitlines() if prefix in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--quick", action="store_true", help="200 secrets only")
    args = parser.parse_args()
    sizes = [200] if args.quick else args.secrets
    rows: list[tuple[int, RunResult, RunResult]] = []
    with tempfile.TemporaryDirectory(prefix="vaultdr-total-loss-") as tmp:
        for count in sizes:
            work = Path(tmp) / f"n{count}"
            work.mkdir()
            print(f"\n== {count} secrets ==", flush=True)
            ours, record = run_vaultdr(work, count)
            print_run("vaultdr", ours, count)
            print_phases(record)
            seeds = run_seeds(work, count)
            print_run("seeds", seeds, count)
            rows.append((count, ours, seeds))
        leftovers = our_leftovers(tmp)
    print("\nsecrets | vaultdr s | seeds s            | vaultdr/seeds")
    for count, ours, seeds in rows:
        print(f"{count:7d} | {describe(ours):>9} | {describe(seeds):>18} | {ratio(ours, seeds)}")
    for count, ours, _ in rows:
        if count == 1000:
            t = ours.ready.ready
            verdict = "yes" if t is not None and t < GOAL_SECONDS else "no"
            print(f"vaultdr with 1,000 secrets under {GOAL_SECONDS:.0f} s: {verdict}")
    print(f"processes left behind: {len(leftovers)}")
    for line in leftovers:
        print(f"  {line}")


if __name__ == "__main__":
    main()
