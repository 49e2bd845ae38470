"""The local environment's state directory: one place for ports, pids, CA and paths.

``status``, ``down``, faults and drills in another shell all find the stack
through ``<state dir>/state.json``. The file holds the emulator's credentials,
so it is written 0600 and atomically (a reader never sees half a file).

Layout::

    <state dir>/state.json            this file
    <state dir>/ca/                   the local CA
    <state dir>/nodes/<name>/         config.hcl, data/ (= the node's PVC), tls/, log, pid.json, hold
    <state dir>/moto/, kubeapi/, transit/   the AWS emulator, Kubernetes API stand-in, transit KMS
    <state dir>/supervisor.log, events.jsonl
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vaultdr.envs.local.processes import ProcessRecord
from vaultdr.errors import ConfigError
from vaultdr.files import write_json_atomic

# Kept importable from here for the modules that still do (the drill and chaos front
# ends); new code imports them from vaultdr.statedir and vaultdr.files.
from vaultdr.statedir import DEFAULT_STATE_DIR, STATE_ENV_VAR, resolve_state_dir

__all__ = [
    "DEFAULT_STATE_DIR",
    "EVENTS_FILE",
    "HEARTBEAT_FILE",
    "STATE_ENV_VAR",
    "LocalState",
    "NodeState",
    "resolve_state_dir",
    "write_json_atomic",
]

#: Where the supervisor says every second that it and its agent threads live.
HEARTBEAT_FILE = Path("agents") / "heartbeat.json"
#: Where the supervisor and its agents append node and restore events (JSON lines).
EVENTS_FILE = Path("events.jsonl")
_SAVE_LOCK = threading.Lock()


def _unreadable(path: Path, exc: Exception) -> ConfigError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return ConfigError(
        f"{path} is unreadable ({reason}): it is not a state file this vaultdr wrote",
        hint="if a stack still runs there, stop its processes by hand; then remove the "
        "directory or pass another --state-dir",
    )


@dataclass
class NodeState:
    """One node: its ports and the files that are its 'pod' and its 'PVC'."""

    name: str
    api_port: int
    cluster_port: int
    directory: str

    @property
    def api_addr(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def dir(self) -> Path:
        return Path(self.directory)

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def config_file(self) -> Path:
        return self.dir / "config.hcl"

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid.json"

    @property
    def hold_file(self) -> Path:
        return self.dir / "hold"

    @property
    def binary_file(self) -> Path:
        """Names this node's server binary when it differs from the stack's (its 'image')."""
        return self.dir / "binary"

    def process(self) -> ProcessRecord | None:
        """The node's current process as the supervisor recorded it, if any."""
        try:
            return ProcessRecord.from_dict(json.loads(self.pid_file.read_text()))
        except (OSError, ValueError, KeyError):
            return None


@dataclass
class LocalState:
    """Everything needed to find and drive a running local stack."""

    directory: str
    cluster: str
    stack_file: str
    binary: str
    engine_kind: str
    engine_version: str
    seal: str
    ca_file: str
    nodes: list[NodeState]
    aws: dict[str, Any] = field(default_factory=dict)
    kubeapi: dict[str, Any] = field(default_factory=dict)
    transit: dict[str, Any] = field(default_factory=dict)
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    phase: str = "starting"
    cluster_id: str = ""
    created_at: str = ""

    @property
    def path(self) -> Path:
        return Path(self.directory) / "state.json"

    def save(self) -> None:
        with _SAVE_LOCK:
            write_json_atomic(self.path, asdict(self), private=True)

    @classmethod
    def load(cls, directory: Path) -> LocalState | None:
        path = directory / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise ConfigError(
                f"state directory {directory} is a file, not a directory",
                hint="pass --state-dir where the stack runs",
            ) from None
        except (OSError, ValueError) as exc:
            raise _unreadable(path, exc) from None
        try:
            data["nodes"] = [NodeState(**node) for node in data.get("nodes", [])]
            return cls(**data)
        except (TypeError, AttributeError, KeyError) as exc:
            raise _unreadable(path, exc) from None

    def node(self, name: str) -> NodeState:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise ConfigError(f"no node named '{name}'", hint=f"the nodes are: {known}")

    def record(self, name: str) -> ProcessRecord | None:
        data = self.processes.get(name)
        return ProcessRecord.from_dict(data) if data else None
