"""The recovery timeline: every fault and every observed state change, on one clock.

A poller asks every node, at a fixed interval (100 ms by default), for its seal
status and whether it is the leader, reads a secret through the cluster and,
if asked, logs in with kubernetes auth. It records only *changes*, each with
the monotonic time at which the poll that saw it started, so a change is
recorded at most one interval plus one request after it happened. Faults are
marked by the code that injects them (``mark("fault:kill-leader")``), and
events from the environment (the local supervisor's restore watcher) are merged
in, so recovery times are read off the timeline, never from sleeps.

The first poll records the initial state with the same kinds (``node-unsealed``,
``leader-elected``, ``read-ok``...), flagged ``initial: true`` in ``detail``.

Recovery phases after a fault (seconds after it; None when never reached):

- ``detected``: the first degraded observation (node unreachable, sealed or
  uninitialized, leader lost, read or login failed);
- ``leader``: the first leader elected;
- ``unsealed``: every node unsealed again (after the last node went bad);
- ``restored``: the auto-restore finished;
- ``serving``: reads work again (0.0 if they never stopped);
- ``auth_ready``: a kubernetes login + read works again (0.0 if it never stopped);
- ``writing``: the write ledger's writes are acknowledged again (when a ledger
  feeds the timeline; 0.0 if they never stopped);
- ``healthy``: every node unsealed, a leader, reads working.

Each of ``serving``, ``auth_ready`` and ``writing`` means back *and staying
back*: it is the first success after the last failure, so a read that works,
fails again (a flap: the restore's reseal drops reads for ~0.6 s) and then
stays up is back only at the end of the flap. Every flap is recorded in
``Recovery.flaps`` and its failing event carries ``detail.flap``.
:meth:`Timeline.wait_recovered` concludes only once each of them has stayed up
for ``stable_for`` seconds (``objectives.stable_for`` in stack.yaml).

The RTO is the later of ``serving``, ``auth_ready`` and ``writing``: the time
until apps can authenticate, read and write again, and keep doing so, which is
what an outage means to them. Full redundancy (``healthy``) is reported beside
it.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vaultdr.envs.base import Environment
from vaultdr.errors import VaultdrError
from vaultdr.ledger import WriteLedger

DEGRADED = {
    "node-unreachable",
    "node-sealed",
    "node-uninitialized",
    "leader-lost",
    "read-failed",
    "login-failed",
    "write-failed",
}
PHASES = (
    "detected",
    "leader",
    "unsealed",
    "restored",
    "serving",
    "auth_ready",
    "writing",
    "healthy",
)
#: The checks apps feel: (phase, its success event, its failure event, the check's key).
APP_CHECKS = (
    ("serving", "read-ok", "read-failed", "read"),
    ("auth_ready", "login-ok", "login-failed", "login"),
    ("writing", "write-ok", "write-failed", "write"),
)
#: How long a phase must stay up before a wait concludes it is back (stack.yaml's default).
STABLE_FOR = 3.0


def _wall() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class Event:
    mono: float
    wall: str
    kind: str
    node: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    recorded: float = 0.0  # monotonic time the event was appended (detection latency)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoginCheck:
    namespace: str
    service_account: str
    role: str
    mount: str = "secret"
    path: str = "apps/web/config"
    audience: str = "vault"
    auth_mount: str = "kubernetes"


@dataclass
class Recovery:
    fault: str | None
    fault_wall: str | None
    detected: float | None = None
    leader: float | None = None
    unsealed: float | None = None
    restored: float | None = None
    serving: float | None = None
    auth_ready: float | None = None
    writing: float | None = None
    healthy: float | None = None
    interrupted: bool = False
    required: tuple[str, ...] = ("serving", "auth_ready", "healthy")
    #: Failures after a check had come back: {"check", "failed_at", "back_at", "seconds"}.
    flaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rto(self) -> float | None:
        """The later of reads, logins and writes back (and staying back)."""
        parts = [self.serving, self.auth_ready, self.writing]
        known = [p for p in parts if p is not None]
        return max(known) if known else None

    @property
    def recovered(self) -> bool:
        return all(getattr(self, name) is not None for name in self.required)

    @property
    def missing(self) -> list[str]:
        """The required phases not reached (yet)."""
        return [name for name in self.required if getattr(self, name) is None]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["required"] = list(self.required)
        data["flaps"] = [dict(f) for f in self.flaps]
        data["rto"] = self.rto
        data["recovered"] = self.recovered
        return data


Source = Callable[[], list[Event]]


class Timeline:
    """Polls the stack and keeps the events; thread-safe."""

    def __init__(
        self,
        env: Environment,
        token: str,
        *,
        interval: float = 0.1,
        login: LoginCheck | None = None,
        read_path: tuple[str, str] | None = None,
        request_timeout: float = 1.0,
    ) -> None:
        self.env = env
        self._token = token
        self.interval = interval
        self.login = login
        self.read_path = read_path
        self.request_timeout = request_timeout
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}
        self._sources: list[Source] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="timeline")
        self._ticks = 0
        self._sa_token: tuple[float, str] | None = None
        self._pending: dict[str, tuple[float, Future[bool]]] = {}
        self._last_mark = 0.0
        self._tick_done = 0.0  # start of the last completed node poll
        self._side_done: dict[str, float] = {}  # start of each side check's last result
        self._back_since_mark: set[str] = set()  # app checks that succeeded since the fault
        self._writes = False

    # --- recording ----------------------------------------------------------------------
    def mark(self, kind: str, node: str | None = None, **detail: Any) -> Event:
        """Record a fault or an action now."""
        now = time.monotonic()
        event = Event(now, _wall(), kind, node, dict(detail), recorded=now)
        self._last_mark = now
        self._back_since_mark.clear()
        self._append(event)
        return event

    def add_write_source(self, source: Source) -> None:
        """Merge the write ledger's ``write-ok``/``write-failed`` changes; ``writing``
        becomes a phase and is required by default."""
        self._writes = True
        self._sources.append(self._flagging(source))

    def _flagging(self, source: Source) -> Source:
        def read() -> list[Event]:
            found = source()
            for event in found:
                self._flag_flap(event, "write")
            return found

        return read

    def _flag_flap(self, event: Event, key: str) -> None:
        """Mark a failure of an app check that had come back after the fault (a flap)."""
        if self._last_mark == 0.0 or event.mono < self._last_mark:
            return
        if event.kind == f"{key}-ok":
            self._back_since_mark.add(key)
        elif event.kind == f"{key}-failed" and key in self._back_since_mark:
            event.detail = {**event.detail, "flap": True}

    def _append(self, event: Event) -> None:
        if not event.recorded:
            event.recorded = time.monotonic()
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return sorted(self._events, key=lambda e: e.mono)

    def add_source(self, source: Source) -> None:
        self._sources.append(source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "ticks": self._ticks,
            "events": [e.to_dict() for e in self.events],
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    # --- polling ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def tick(self) -> None:
        """One poll of every node; records what changed. The read and login checks run
        beside the ticks (one at a time each), so a slow login never slows node polling."""
        started = time.monotonic()
        names = self.env.node_names()
        node_futures = {name: self._pool.submit(self._poll_node, name) for name in names}
        deadline = self.request_timeout + 1.0
        nodes: dict[str, tuple[str, bool]] = {}
        for name, future in node_futures.items():
            try:
                nodes[name] = future.result(timeout=deadline)
            except Exception:  # noqa: BLE001 - a stalled poll is an unreachable node
                nodes[name] = ("node-unreachable", False)
        initial = self._ticks == 0
        for name, (state, _leader) in nodes.items():
            self._change(f"node:{name}", state, started, node=name, initial=initial)
        leaders = [name for name, (_s, is_leader) in nodes.items() if is_leader]
        leader = leaders[0] if leaders else None
        previous = self._state.get("leader", "?")
        if leader != previous:
            self._state["leader"] = leader
            if leader is None:
                self._emit(started, "leader-lost", None, {"previous": previous}, initial)
            else:
                detail = {"previous": None if previous == "?" else previous}
                self._emit(started, "leader-elected", leader, detail, initial)
        all_unsealed = all(state == "node-unsealed" for state, _ in nodes.values())
        self._change(
            "all-unsealed",
            "all-unsealed" if all_unsealed else "not-all",
            started,
            initial=initial,
            quiet="not-all",
        )
        if self.read_path is not None:
            self._side_check("read", self._poll_read, ("read-ok", "read-failed"), initial)
        if self.login is not None:
            self._side_check("login", self._poll_login, ("login-ok", "login-failed"), initial)
        read_ok = self._state.get("read") != "read-failed"
        healthy = all_unsealed and leader is not None and read_ok
        self._change(
            "healthy",
            "healthy" if healthy else "unhealthy",
            started,
            initial=initial,
            quiet="unhealthy",
        )
        for source in self._sources:
            try:
                for event in source():
                    self._append(event)
            except Exception:  # noqa: BLE001 - an external source must not stop the poll
                pass
        self._tick_done = started
        self._ticks += 1

    def _side_check(
        self, key: str, check: Callable[[], bool], kinds: tuple[str, str], initial: bool
    ) -> None:
        """Collect the finished check (stamped with its start), then start the next one."""
        pending = self._pending.get(key)
        if pending is not None:
            began, future = pending
            if not future.done():
                if time.monotonic() - began < self.request_timeout * 3 + 1.0:
                    return
                ok = False  # stalled: count it as failed and start afresh
            else:
                try:
                    ok = bool(future.result())
                except Exception:  # noqa: BLE001 - a check that raises failed
                    ok = False
            self._change(key, kinds[0] if ok else kinds[1], began, initial=initial)
            self._side_done[key] = began
        self._pending[key] = (time.monotonic(), self._pool.submit(check))

    def _change(
        self,
        key: str,
        value: str,
        mono: float,
        *,
        node: str | None = None,
        initial: bool = False,
        quiet: str | None = None,
    ) -> None:
        if self._state.get(key) == value:
            return
        self._state[key] = value
        if value == quiet:
            return  # "not all unsealed" and "unhealthy" are implied by the events that caused them
        self._emit(mono, value, node, {}, initial)

    def _emit(
        self, mono: float, kind: str, node: str | None, detail: dict[str, Any], initial: bool
    ) -> None:
        if initial:
            detail = {**detail, "initial": True}
        # A poll already under way when a fault was marked may see its effect: the change
        # is then stamped at the fault, never before it.
        event = Event(max(mono, self._last_mark), _wall(), kind, node, detail)
        for key in ("read", "login"):
            self._flag_flap(event, key)
        self._append(event)

    def _poll_node(self, name: str) -> tuple[str, bool]:
        client = self.env.client(name).with_timeout(self.request_timeout)
        try:
            status = client.read_seal_status()
        except VaultdrError:
            return "node-unreachable", False
        if not status.get("initialized"):
            return "node-uninitialized", False
        if status.get("sealed"):
            return "node-sealed", False
        try:
            return "node-unsealed", bool(client.read_leader().get("is_self"))
        except VaultdrError:
            return "node-unsealed", False

    def _poll_read(self) -> bool:
        assert self.read_path is not None
        mount, path = self.read_path
        for name in self.env.node_names():
            client = self.env.client(name, token=self._token).with_timeout(self.request_timeout)
            try:
                client.read_kv(mount, path)
                return True
            except VaultdrError:
                continue
        return False

    def _poll_login(self) -> bool:
        check = self.login
        assert check is not None
        now = time.monotonic()
        if self._sa_token is None or now - self._sa_token[0] > 300:
            jwt = self.env.service_account_token(
                check.namespace, check.service_account, audiences=[check.audience]
            )
            self._sa_token = (now, jwt)
        jwt = self._sa_token[1]
        for name in self.env.node_names():
            client = self.env.client(name).with_timeout(self.request_timeout)
            try:
                token = client.login_kubernetes(role=check.role, jwt=jwt, mount=check.auth_mount)
                return client.with_token(token).read_kv(check.mount, check.path) is not None
            except VaultdrError:
                continue
        return False

    # --- measuring ------------------------------------------------------------------------------
    def last_fault(self) -> Event | None:
        faults = [e for e in self.events if e.kind.startswith("fault:")]
        return faults[-1] if faults else None

    def default_required(self) -> tuple[str, ...]:
        """serving, auth_ready and healthy; writing too when a ledger feeds the timeline."""
        return ("serving", "auth_ready", *(("writing",) if self._writes else ()), "healthy")

    def measure(
        self,
        since: Event | None = None,
        *,
        require: tuple[str, ...] | None = None,
    ) -> Recovery:
        """Recovery phases after ``since`` (default: the last fault)."""
        require = self.default_required() if require is None else require
        fault = since or self.last_fault()
        if fault is None:
            return Recovery(fault=None, fault_wall=None, required=require)
        t0 = fault.mono
        after = [e for e in self.events if e.mono >= t0 and e is not fault]
        result = Recovery(fault=fault.kind, fault_wall=fault.wall, required=require)

        def rel(event: Event | None) -> float | None:
            return None if event is None else round(max(0.0, event.mono - t0), 3)

        def first(kinds: set[str], events: list[Event]) -> Event | None:
            return next((e for e in events if e.kind in kinds), None)

        def last(kinds: set[str], events: list[Event]) -> Event | None:
            found = [e for e in events if e.kind in kinds]
            return found[-1] if found else None

        result.detected = rel(first(DEGRADED, after))
        result.leader = rel(first({"leader-elected"}, after))
        result.restored = rel(first({"restore-finished"}, after))
        bad_node = last({"node-unreachable", "node-sealed", "node-uninitialized"}, after)
        unsealed_from = [e for e in after if bad_node is None or e.mono >= bad_node.mono]
        if bad_node is None:
            result.unsealed = (
                0.0
                if self._state_before(t0, "all-unsealed")
                else rel(first({"all-unsealed"}, after))
            )
        else:
            result.unsealed = rel(first({"all-unsealed"}, unsealed_from))
        for phase, ok_kind, bad_kind, key in APP_CHECKS:
            if key == "write" and not self._writes:
                continue
            failed = last({bad_kind}, after)
            if failed is None:
                value = 0.0 if self._state_before(t0, ok_kind) else rel(first({ok_kind}, after))
            else:
                result.interrupted = True
                value = rel(first({ok_kind}, [e for e in after if e.mono >= failed.mono]))
            setattr(result, phase, value)
            result.flaps += _flaps(key, ok_kind, bad_kind, after, t0)
        degraded = last(DEGRADED, after)
        healthy_from = [e for e in after if degraded is None or e.mono >= degraded.mono]
        if degraded is None and self._state_before(t0, "healthy"):
            result.healthy = 0.0
        else:
            result.healthy = rel(first({"healthy"}, healthy_from))
        return result

    def _state_before(self, t0: float, kind: str) -> bool:
        """True when the last event of ``kind``'s family before ``t0`` was ``kind`` itself."""
        families = {
            "read-ok": {"read-ok", "read-failed"},
            "login-ok": {"login-ok", "login-failed"},
            "write-ok": {"write-ok", "write-failed"},
            "all-unsealed": {"all-unsealed", *DEGRADED},
            "healthy": {"healthy", *DEGRADED},
        }
        family = families[kind]
        before = [e for e in self.events if e.mono < t0 and e.kind in family]
        return bool(before) and before[-1].kind == kind

    def wait_recovered(
        self,
        timeout: float,
        *,
        require: tuple[str, ...] | None = None,
        stable_for: float = STABLE_FOR,
    ) -> Recovery:
        """Block (at most ``timeout`` s, plus ``stable_for``) until the ``require`` phases
        after the last fault are reached and reads, logins and writes have stayed up for
        ``stable_for`` seconds; the measure either way (``recovered`` False on timeout).

        A flap inside the window moves the phase to the end of the flap and the window
        starts again, so the RTO returned is the time until the service came back for good.
        """
        deadline = time.monotonic() + timeout
        while True:
            recovery = self.measure(require=require)
            done = recovery.recovered and self.observed_since_fault()
            if done and self._stable(recovery, stable_for):
                return recovery
            if time.monotonic() >= deadline + (stable_for if done else 0.0):
                return recovery
            time.sleep(min(self.interval, 0.2))

    def _stable(self, recovery: Recovery, stable_for: float) -> bool:
        """True when every app check that came back has stayed up for ``stable_for`` s."""
        fault = self.last_fault()
        if fault is None or stable_for <= 0:
            return True
        now = time.monotonic()
        for phase in ("serving", "auth_ready", "writing"):
            value = getattr(recovery, phase)
            if value is not None and now - (fault.mono + value) < stable_for:
                return False
        return True

    def observed_since_fault(self) -> bool:
        """True once every poll (nodes, read, login) has a result that began after the last
        fault: until then "nothing changed" only means "not looked yet"."""
        fault = self.last_fault()
        if fault is None:
            return True
        checks = [key for key, on in (("read", self.read_path), ("login", self.login)) if on]
        return self._tick_done >= fault.mono and all(
            self._side_done.get(key, 0.0) >= fault.mono for key in checks
        )


def _flaps(
    key: str, ok_kind: str, bad_kind: str, after: list[Event], t0: float
) -> list[dict[str, Any]]:
    """Failures of one app check after it had first come back following the fault."""
    found: list[dict[str, Any]] = []
    back = False
    failed_at: float | None = None
    for event in after:
        if event.kind == ok_kind:
            if failed_at is not None and back:
                found[-1]["back_at"] = round(event.mono - t0, 3)
                found[-1]["seconds"] = round(event.mono - t0 - failed_at, 3)
            back, failed_at = True, None
        elif event.kind == bad_kind and back and failed_at is None:
            failed_at = round(event.mono - t0, 3)
            found.append({"check": key, "failed_at": failed_at, "back_at": None, "seconds": None})
    return found


def write_events_source(ledger: WriteLedger) -> Source:
    """``write-ok`` / ``write-failed`` whenever the ledger's writes change between being
    acknowledged and failing, stamped with the write's own start (for ``writing``)."""
    seen = [0, 0]
    state: list[str | None] = [None]

    def read() -> list[Event]:
        acked, failed = ledger.outcomes_since(seen[0], seen[1])
        seen[0] += len(acked)
        seen[1] += len(failed)
        outcomes = sorted(
            [(a.mono, a.wall, "write-ok") for a in acked]
            + [(f.mono, f.wall, "write-failed") for f in failed]
        )
        found: list[Event] = []
        for mono, wall, kind in outcomes:
            if kind != state[0]:
                state[0] = kind
                found.append(Event(mono, wall, kind, None, {}))
        return found

    return read


def local_events_source(state_dir: Path) -> Source:
    """Events the local supervisor and its agents append to ``events.jsonl`` from now on."""
    path = state_dir / "events.jsonl"
    offset = path.stat().st_size if path.exists() else 0
    kinds = {
        "node-started": "node-started",
        "node-exited": "node-exited",
        "restore-started": "restore-started",
        "restore-finished": "restore-finished",
    }

    def read() -> list[Event]:
        nonlocal offset
        if not path.exists():
            return []
        with open(path) as stream:
            stream.seek(offset)
            chunk = stream.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        offset += len(complete.encode())
        found: list[Event] = []
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            kind = kinds.get(str(record.get("event")))
            if kind is None or "mono" not in record:
                continue
            wall = dt.datetime.fromtimestamp(float(record.get("t", time.time())), dt.UTC)
            detail = {
                k: v for k, v in record.items() if k in ("snapshot", "seconds", "pid", "code")
            }
            found.append(
                Event(
                    float(record["mono"]),
                    wall.isoformat(timespec="milliseconds"),
                    kind,
                    record.get("node"),
                    detail,
                )
            )
        return found

    return read
