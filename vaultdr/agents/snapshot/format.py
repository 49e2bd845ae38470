"""What a raft snapshot file is, and checking that a file is one.

A raft snapshot (``GET sys/storage/raft/snapshot``) is a gzipped tar whose
``meta.json`` gives the raft index and term and whose ``SHA256SUMS`` lists the
sha256 of every other member. :func:`inspect_snapshot` checks all of that and
returns the file's size and sha256 with the meta; anything else raises
:class:`SnapshotFormatError` naming the first problem.

Hazards:

* The archive is read as a stream and nothing is extracted to disk, so member
  names (``../`` included) cannot write anywhere; ``meta.json`` is buffered up
  to 1 MiB, a bigger one is refused.
* A file that passes is a well-formed snapshot, not the *right* one: callers
  compare its sha256 with the object's metadata (see :mod:`.store`).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vaultdr.errors import VaultdrError

GZIP_MAGIC = b"\x1f\x8b"
_META_LIMIT = 1 << 20  # meta.json is a few hundred bytes; refuse to buffer a giant one
_CHUNK = 1 << 20


class SnapshotError(VaultdrError):
    """A snapshot could not be taken, uploaded or trusted."""


class SnapshotFormatError(SnapshotError):
    """The bytes are not a raft snapshot (empty, not gzip, no meta.json, bad SHA256SUMS)."""


@dataclass(frozen=True)
class SnapshotFile:
    """What a snapshot file on disk is: its size, sha256 and raft ``meta.json``."""

    size: int
    sha256: str
    meta: dict[str, Any]

    @property
    def raft_index(self) -> int:
        return int(self.meta["Index"])

    @property
    def raft_term(self) -> int:
        return int(self.meta.get("Term", 0))


def hash_file(path: Path) -> tuple[int, str]:
    """Size and sha256 hex digest of ``path``."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def inspect_snapshot(path: Path) -> SnapshotFile:
    """Size, sha256 and raft meta of the snapshot at ``path``.

    Raises :class:`SnapshotFormatError` when it is empty, not gzip, not a readable
    tar, has no usable ``meta.json``, or its members do not match ``SHA256SUMS``.
    """
    size, digest = hash_file(path)
    if size == 0:
        raise SnapshotFormatError("empty file")
    with path.open("rb") as stream:
        if stream.read(2) != GZIP_MAGIC:
            raise SnapshotFormatError("not gzip")
    return SnapshotFile(size=size, sha256=digest, meta=read_snapshot_meta(path))


def read_snapshot_meta(path: Path) -> dict[str, Any]:
    """The raft ``meta.json`` of a snapshot archive, after checking ``SHA256SUMS``."""
    members = _read_members(path)
    raw = members.meta
    if raw is None:
        raise SnapshotFormatError("no meta.json in the archive")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise SnapshotFormatError("meta.json is not JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("Index"), int):
        raise SnapshotFormatError("meta.json has no raft Index")
    _check_sums(members)
    return meta


@dataclass
class _Members:
    meta: bytes | None = None
    sums: dict[str, str] | None = None
    hashes: dict[str, str] = field(default_factory=dict)


def _read_members(path: Path) -> _Members:
    found = _Members()
    try:
        with tarfile.open(path, "r|gz") as archive:
            for member in archive:
                stream = archive.extractfile(member) if member.isfile() else None
                if stream is not None:
                    _read_member(member.name, stream, found)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SnapshotFormatError(f"unreadable archive ({type(exc).__name__})") from None
    return found


def _read_member(name: str, stream: IO[bytes], found: _Members) -> None:
    if name == "SHA256SUMS":
        found.sums = _parse_sums(stream.read(_META_LIMIT).decode("utf-8", "replace"))
        return
    digest = hashlib.sha256()
    data = b""
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
        if name == "meta.json" and len(data) < _META_LIMIT:
            data += chunk
    found.hashes[name] = digest.hexdigest()
    if name == "meta.json":
        found.meta = data


def _parse_sums(text: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _check_sums(members: _Members) -> None:
    if not members.sums:
        raise SnapshotFormatError("no SHA256SUMS in the archive")
    for name, expected in sorted(members.sums.items()):
        actual = members.hashes.get(name)
        if actual is None:
            raise SnapshotFormatError(f"{name} is listed in SHA256SUMS but missing")
        if actual != expected:
            raise SnapshotFormatError(f"{name} does not match its SHA256SUMS entry")
