"""Files other processes read while vaultdr writes them: replaced whole, never seen half.

The state file, the supervisor's heartbeat and pid files, the snapshot agent's status,
the restore record, the Kubernetes API stand-in's service accounts and every run's
evidence are read by another process (``vaultdr status`` in another shell, the
supervisor, a drill) at any moment. Each is written through a temporary file in the
same directory, flushed to disk, and renamed over the old one: a reader sees the old
file or the new one.

Hazards:

* The temporary file is in the target's directory (a rename across file systems is
  not atomic); a crash between create and rename can leave a ``.<name>.*.tmp`` behind,
  never a half-written target.
* ``mode`` is set exactly (the umask does not apply): pass ``private=True`` (0600) for
  anything that holds a credential, like the local state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (created with ``mode``), creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_json_atomic(path: Path, data: Any, *, private: bool = False) -> None:
    """Replace ``path`` with ``data`` as indented JSON, keys sorted (values JSON cannot
    hold, like datetimes, as their ``str``); 0600 when ``private``."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    write_bytes_atomic(path, text.encode(), mode=0o600 if private else 0o644)
