"""``MANIFEST.sha256``: the seal over a run's evidence, in ``sha256sum`` format.

``sha256sum -c MANIFEST.sha256`` checks it without vaultdr; ``vaultdr evidence
verify DIR`` also reports files added after the seal and refuses symlinks.

:func:`seal_run` is the one way a run directory is sealed: every command that
writes a run's evidence (``vaultdr drill``, ``upgrade-check``, ``report``)
calls it once everything else of the run is on disk.

Hazard: the manifest is written last, over whatever is in the directory then;
anything written into the run afterwards is "not in the manifest" to
``evidence verify``, and a seal taken over tampered files blesses them, so
``vaultdr report`` verifies a sealed run before it re-seals it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from vaultdr.evidence.report import write_report
from vaultdr.evidence.schema import EvidenceError

MANIFEST = "MANIFEST.sha256"
_LINE = re.compile(r"^([0-9a-f]{64})  (.+)$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(run_dir: Path) -> tuple[list[str], list[str]]:
    """(regular files, symlinks) under run_dir, relative, sorted; the manifest excluded."""
    files, links = [], []
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir).as_posix()
        if path.is_symlink():
            links.append(relative)
        elif path.is_file() and relative != MANIFEST:
            files.append(relative)
    return files, links


def write_manifest(run_dir: Path) -> Path:
    """``MANIFEST.sha256`` over every file in ``run_dir`` as it is now (symlinks refused)."""
    files, links = _files(run_dir)
    if links:
        raise EvidenceError(f"refusing to seal symlinks in {run_dir}: {', '.join(links)}")
    lines = [f"{_sha256(run_dir / name)}  {name}\n" for name in files]
    path = run_dir / MANIFEST
    path.write_text("".join(lines))
    return path


def seal_run(run_dir: Path) -> Path:
    """Seal a run: ``report.html`` from its evidence, then the manifest over it all, last.

    Raises :class:`EvidenceError` (and seals nothing) when ``evidence.json`` is
    missing or invalid. Returns the manifest's path.
    """
    write_report(run_dir)
    return write_manifest(run_dir)


def verify_manifest(run_dir: Path, *, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Every problem with the seal: changed, missing or unlisted files, bad lines, symlinks."""
    manifest = run_dir / MANIFEST
    if not manifest.exists():
        return [f"no {MANIFEST} in {run_dir}"]
    problems: list[str] = []
    listed: dict[str, str] = {}
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        match = _LINE.match(line)
        if not match:
            problems.append(f"{MANIFEST} line {number} is malformed")
            continue
        name = match.group(2)
        if name.startswith("/") or ".." in name.split("/"):
            problems.append(f"{MANIFEST} line {number} names a path outside the run: {name}")
            continue
        listed[name] = match.group(1)
    files, links = _files(run_dir)
    problems += [f"symlink (not allowed): {name}" for name in links]
    for name, digest in listed.items():
        if name in ignore:
            continue
        path = run_dir / name
        if not path.is_file():
            problems.append(f"missing: {name}")
        elif _sha256(path) != digest:
            problems.append(f"changed: {name}")
    problems += [f"not in the manifest: {n}" for n in files if n not in listed and n not in ignore]
    return problems
