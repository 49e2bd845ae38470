"""Diagnostics of a failed drill: what the stack's parts logged and reported, bounded and redacted.

When a scenario fails, the drill asks its environment for diagnostics
(:meth:`~vaultdr.envs.base.Environment.diagnostics`) and files them under
``reports/<run-id>/diagnostics/<scenario>/``, sealed by the run's manifest with the
rest of the evidence. The kube environments write each server pod's and each ops
agent's log (current and previous container), the namespace's events and the
StatefulSet, PVC and pod status; the local one its nodes' and supervisor's log
files. Every file goes through one :class:`DiagnosticsWriter`, so every backend is
bounded and redacted the same way.

Hazards:

* Evidence leaves the machine (CI artifacts, auditors): no secret may be in it. Server
  logs should hold none (OpenBao does not log tokens), but the agents' logs and the
  events are ours, and a log line can quote anything. Every text is passed through
  :func:`redact` before it is written: the known secret values the caller hands in
  (the root token), and anything *shaped* like a token, a JWT, a key or a credential
  assignment. Redaction is by shape, so it can also hide a harmless long identifier;
  a sha256 or a git commit (hex of 64 or 40) is kept.
* Each file is cut to :data:`MAX_FILE_BYTES` (its end kept: the failure is at the end).
* Collecting must never change a drill's verdict: :class:`DiagnosticsWriter` records
  what it could not collect instead of raising, and callers catch the rest.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultdr.errors import EXIT_BAD_INPUT, EXIT_OK
from vaultdr.files import write_bytes_atomic

__all__ = [
    "DEADLINE_SECONDS",
    "MAX_FILE_BYTES",
    "REDACTED",
    "Diagnostics",
    "DiagnosticsWriter",
    "redact",
    "redact_tree",
    "tail_text",
]

#: The most any one diagnostics file keeps (the end of it).
MAX_FILE_BYTES = 512 * 1024
#: How long one collection may take; what is left after it is skipped (and noted).
DEADLINE_SECONDS = 120.0
REDACTED = "<redacted>"

#: Vault/OpenBao tokens: service (``hvs.``, ``s.``), batch (``hvb.``, ``b.``) and
#: recovery (``hvr.``, ``r.``) tokens, and the ``<prefix>.<accessor>`` forms.
_TOKEN = re.compile(r"\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{16,}")
#: A JWT (a service-account token): base64url header, payload and optional signature.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)?")
#: ``password=...``, ``"token": "..."``, ``AWS_SECRET_ACCESS_KEY: ...``: the value goes.
_ASSIGNMENT = re.compile(
    r"(?i)(\"?[\w.-]*(?:secret|password|passwd|token|credential|private[_-]?key|"
    r"recovery[_-]?keys?|unseal[_-]?keys?|api[_-]?key|access[_-]?key)[\w.-]*\"?"
    r"\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;}\]]+)"
)
#: A long base64 (or hex) run: a recovery key share (44 base64 or 66 hex characters),
#: an AWS secret key (40), a PEM body line.
_LONG_RUN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/]{40,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"^[0-9a-f]+$")
_PEM_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
)


_PATH_SEGMENT = re.compile(r"^[a-z0-9_.-]{0,32}$")


def _long_run(match: re.Match[str]) -> str:
    """A long run is kept only when it cannot be a key: a git commit or a sha256 (hex of
    40 or 64), or a path of short lowercase words (``/v1/sys/storage/raft/...``)."""
    run = match.group(0)
    bare = run.lstrip("/")  # containerd://<sha256>
    if _HEX.match(bare) and len(bare) in (40, 64):
        return run
    if "/" in run and all(_PATH_SEGMENT.match(part) for part in run.split("/")):
        return run
    return REDACTED


def redact(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with every ``known`` secret value and everything shaped like a secret
    replaced by ``<redacted>``."""
    for secret in sorted((s for s in known if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _PEM_KEY.sub(REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = _TOKEN.sub(REDACTED, text)
    text = _ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)
    return _LONG_RUN.sub(_long_run, text)


def tail_text(text: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The end of ``text`` in at most ``max_bytes`` UTF-8 bytes, from a line start, with
    a first line saying how much was cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    kept = data[-max_bytes:]
    newline = kept.find(b"\n")
    if 0 <= newline < len(kept) - 1:
        kept = kept[newline + 1 :]
    cut = len(data) - len(kept)
    return f"[... {cut} bytes cut: the last {len(kept)} kept ...]\n" + kept.decode(
        "utf-8", "replace"
    )


@dataclass
class Diagnostics:
    """What a diagnostics collection wrote (paths relative to its directory) and what it
    could not collect (a line each: what, and why; nothing secret)."""

    directory: Path
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class DiagnosticsWriter:
    """Writes one collection's files into ``directory``: redacted, bounded, and listed."""

    def __init__(
        self,
        directory: Path,
        *,
        known_secrets: Sequence[str] = (),
        max_bytes: int = MAX_FILE_BYTES,
        deadline: float = DEADLINE_SECONDS,
    ) -> None:
        self.result = Diagnostics(directory)
        self._known = [s for s in known_secrets if s]
        self._max = max_bytes
        self._deadline = time.monotonic() + deadline
        self._budget = deadline

    def out_of_time(self, what: str) -> bool:
        """True (and ``what`` noted as skipped) once the collection's deadline has passed."""
        if time.monotonic() < self._deadline:
            return False
        self.error(what, f"skipped: the collection ran out of its {self._budget:.0f} s")
        return True

    @property
    def directory(self) -> Path:
        return self.result.directory

    def text(self, name: str, text: str) -> None:
        """Write ``name`` (a relative path) with ``text``, redacted and cut to the bound."""
        body = tail_text(redact(text, self._known), self._max)
        try:
            write_bytes_atomic(self.directory / name, body.encode("utf-8", "replace"))
        except OSError as exc:
            self.error(f"write {name}", f"{type(exc).__name__}: {exc.strerror or exc}")
            return
        self.result.files.append(name)

    def json(self, name: str, data: Any) -> None:
        """Write ``data`` as indented JSON (redacted like any text)."""
        self.text(name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def copy_tail(self, name: str, source: Path) -> None:
        """Write the end of the file ``source`` as ``name``; a missing file is noted."""
        try:
            with open(source, "rb") as stream:
                stream.seek(0, 2)
                size = stream.tell()
                stream.seek(max(0, size - 4 * self._max))
                raw = stream.read()
        except OSError as exc:
            self.error(f"read {source}", f"{type(exc).__name__}: {exc.strerror or exc}")
            return
        self.text(name, raw.decode("utf-8", "replace"))

    def error(self, what: str, why: str) -> None:
        """Note that ``what`` could not be collected, and why (redacted too)."""
        self.result.errors.append(redact(f"{what}: {why}", self._known))

    def finish(self) -> Diagnostics:
        """The collection as written, with ``errors.txt`` when something was not collected."""
        if self.result.errors:
            errors = list(self.result.errors)
            self.text("errors.txt", "".join(f"{line}\n" for line in errors))
            self.result.errors = errors
        return self.result


def redact_tree(root: Path) -> int:
    """Redact every file under ``root`` in place (a log export about to leave the machine,
    e.g. `kind export logs` in CI); a file that is not UTF-8 text is removed, since it
    cannot be checked. Returns the number of files rewritten or removed."""
    changed = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            path.unlink()
            changed += 1
            continue
        clean = redact(text)
        if clean != text:
            path.write_text(clean, encoding="utf-8")
            changed += 1
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m vaultdr.envs.diagnostics --redact-tree DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m vaultdr.envs.diagnostics",
        description="Redact, in place, every file of a directory of logs before it is shared.",
    )
    parser.add_argument("--redact-tree", type=Path, required=True, metavar="DIR")
    args = parser.parse_args(argv)
    root: Path = args.redact_tree
    if not root.is_dir():
        print(f"error: {root} is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"redacted {redact_tree(root)} file(s) under {root}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
