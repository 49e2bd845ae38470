"""The write ledger: a steady writer whose acknowledged writes must all survive.

During a drill a background thread writes versioned kv-v2 secrets at a fixed
rate, round-robin over a few keys, and records every write the cluster
*acknowledged* (a 200 with a version). Afterwards every acknowledged write is
read back at its version. A missing or different one is a lost write, named by
key, version and time: the RPO in data, not a guess.

After a total loss the cluster is restored from a snapshot, so writes
acknowledged after that snapshot was taken are expected to be gone: they are
reported as the measured RPO (count and seconds), not as failures.

Values are a sequence number and a random nonce; only their sha256 is ever
reported. The nonce stays in memory for the read-back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from vaultdr.envs.base import Environment
from vaultdr.errors import VaultdrError

log = logging.getLogger("vaultdr.ledger")

MAX_VERSIONS = 100000


def _digest(value: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class AckedWrite:
    seq: int
    key: str
    version: int
    digest: str
    mono: float
    wall: str

    def public(self) -> dict[str, Any]:
        return {"seq": self.seq, "key": self.key, "version": self.version, "wall": self.wall}


@dataclass(frozen=True)
class FailedWrite:
    seq: int
    mono: float
    wall: str
    error: str  # the kind of failure (sealed, unreachable, ...), never a value


@dataclass
class LedgerReport:
    acknowledged: int
    unacknowledged: int
    verified: int
    lost: list[dict[str, Any]] = field(default_factory=list)
    expected_losses: list[dict[str, Any]] = field(default_factory=list)
    rpo_writes: int = 0
    rpo_seconds: float = 0.0
    snapshot_taken_at: str | None = None
    first_ack_wall: str | None = None
    last_ack_wall: str | None = None
    unavailable_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No acknowledged write was lost, other than those after a restored snapshot."""
        return not self.lost

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


class WriteLedger:
    """Writes ``{"seq", "nonce"}`` to ``<mount>/<prefix>/<run>/k<i>`` at ``rate`` per second."""

    def __init__(
        self,
        env: Environment,
        token: str,
        *,
        mount: str = "secret",
        prefix: str = "vaultdr-ledger",
        keys: int = 8,
        rate: float = 10.0,
        request_timeout: float = 2.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("the write rate must be positive")
        self.env = env
        self._token = token
        self.mount = mount
        self.run_id = uuid.uuid4().hex[:8]
        self.base = f"{prefix.strip('/')}/{self.run_id}"
        self.keys = [f"{self.base}/k{i}" for i in range(keys)]
        self.rate = rate
        self.request_timeout = request_timeout
        self.acked: list[AckedWrite] = []
        self.failed: list[FailedWrite] = []
        self._values: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0

    # --- writing --------------------------------------------------------------------------
    def _clients(self) -> list[Any]:
        return [
            self.env.client(name, token=self._token).with_timeout(self.request_timeout)
            for name in self.env.node_names()
        ]

    def _prepare(self) -> None:
        """Keep every version of the ledger's keys (kv-v2 prunes after 10 by default)."""
        client = self.env.client(token=self._token).with_timeout(10.0)
        for key in self.keys:
            client.write(f"{self.mount}/metadata/{key}", {"max_versions": MAX_VERSIONS})

    def start(self) -> None:
        if self._thread is not None:
            return
        self._prepare()
        self._thread = threading.Thread(target=self._run, name="write-ledger", daemon=True)
        self._thread.start()

    def outcomes_since(self, acked: int, failed: int) -> tuple[list[AckedWrite], list[FailedWrite]]:
        """The acknowledged writes after the first ``acked`` and the failed ones after the
        first ``failed`` (for the timeline's ``writing`` phase)."""
        with self._lock:
            return list(self.acked[acked:]), list(self.failed[failed:])

    def wait_acknowledged(self, count: int, *, timeout: float = 30.0) -> bool:
        """Wait until at least ``count`` writes were acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.acked) >= count:
                    return True
            if self._thread is None or not self._thread.is_alive():
                return False
            self._stop.wait(0.05)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> WriteLedger:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        clients = self._clients()
        while not self._stop.is_set():
            self.write_once(clients)
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:  # a slow write: keep the rate from here, do not burst to catch up
                next_at = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def write_once(self, clients: list[Any] | None = None) -> bool:
        """One write, trying each node in turn (standbys forward); True when acknowledged."""
        seq = self._seq
        self._seq += 1
        key = self.keys[seq % len(self.keys)]
        value = {"seq": seq, "nonce": secrets.token_hex(8)}
        error = "no node"
        for client in clients or self._clients():
            try:
                version = client.write_kv(self.mount, key, value)
            except VaultdrError as exc:
                error = _kind(exc)
                continue
            if version <= 0:
                error = "no version in the answer"
                continue
            ack = AckedWrite(seq, key, version, _digest(value), time.monotonic(), _iso(_now()))
            with self._lock:
                self.acked.append(ack)
                self._values[seq] = value
            return True
        with self._lock:
            self.failed.append(FailedWrite(seq, time.monotonic(), _iso(_now()), error))
        return False

    def unavailable_windows(self) -> list[tuple[float, float]]:
        """(start, end) monotonic spans of consecutive unacknowledged writes."""
        with self._lock:
            events = sorted(
                [(a.mono, True) for a in self.acked] + [(f.mono, False) for f in self.failed]
            )
        windows: list[tuple[float, float]] = []
        start: float | None = None
        last_fail = 0.0
        for mono, ok in events:
            if not ok:
                start = mono if start is None else start
                last_fail = mono
            elif start is not None:
                windows.append((start, mono))
                start = None
        if start is not None:
            windows.append((start, last_fail))
        return windows

    # --- reading back -----------------------------------------------------------------------
    def verify(
        self,
        *,
        snapshot_taken_at: dt.datetime | None = None,
        fault_at_wall: dt.datetime | None = None,
        timeout: float = 60.0,
    ) -> LedgerReport:
        """Read back every acknowledged write at its version and sort out what was lost."""
        with self._lock:
            acked = list(self.acked)
            values = dict(self._values)
            failed = len(self.failed)
        report = LedgerReport(
            acknowledged=len(acked),
            unacknowledged=failed,
            verified=0,
            snapshot_taken_at=_iso(snapshot_taken_at) if snapshot_taken_at else None,
            first_ack_wall=acked[0].wall if acked else None,
            last_ack_wall=acked[-1].wall if acked else None,
            unavailable_seconds=round(sum(b - a for a, b in self.unavailable_windows()), 3),
        )
        # The active node first: a standby that is still catching up answers reads from
        # its own (stale) copy, which would look like a loss.
        leader = self.env.leader()
        names = self.env.node_names()
        order = ([leader] if leader else []) + [n for n in names if n != leader]
        clients = [
            self.env.client(n, token=self._token).with_timeout(self.request_timeout) for n in order
        ]
        for ack in acked:
            found = self._read_back(clients, ack, timeout)
            if found is not None and _digest(found) == ack.digest == _digest(values[ack.seq]):
                report.verified += 1
                continue
            acked_at = dt.datetime.fromisoformat(ack.wall)
            if snapshot_taken_at is not None and acked_at > snapshot_taken_at:
                report.expected_losses.append(ack.public())
            else:
                report.lost.append(ack.public())
        if report.lost:
            for item in report.lost[:20]:
                log.error(
                    "lost acknowledged write %s v%s at %s",
                    item["key"],
                    item["version"],
                    item["wall"],
                )
        if snapshot_taken_at is not None and report.expected_losses:
            report.rpo_writes = len(report.expected_losses)
            end = fault_at_wall or dt.datetime.fromisoformat(report.expected_losses[-1]["wall"])
            report.rpo_seconds = round(max(0.0, (end - snapshot_taken_at).total_seconds()), 3)
        return report

    def _read_back(
        self, clients: list[Any], ack: AckedWrite, timeout: float
    ) -> dict[str, Any] | None:
        """The value at ack's version, None when the cluster says it is not there."""
        deadline = time.monotonic() + timeout
        last = "no node answered"
        while time.monotonic() < deadline:
            for client in clients:
                try:
                    data: dict[str, Any] | None = client.read_kv(
                        self.mount, ack.key, version=ack.version
                    )
                    return data
                except VaultdrError as exc:
                    last = exc.message
            time.sleep(0.5)
        raise VaultdrError(
            f"cannot read the write ledger back: {last}",
            hint="the cluster did not answer; recover it, then verify again",
        )


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def _kind(exc: VaultdrError) -> str:
    name = type(exc).__name__
    text = exc.message.lower()
    if "sealed" in text:
        return "sealed"
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "cannot reach" in text or "refused" in text:
        return "unreachable"
    return name
