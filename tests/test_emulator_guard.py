"""The emulator's guard on moto's control API, against real emulator processes.

moto answers ``/moto-api/*`` (a dump of every secret, reset, reset-auth) and its instance
metadata to anyone; :mod:`vaultdr.envs.local.emulator` refuses them to callers without
the stack's control token. The module's emulator is bootstrapped and holds a canary
SecureString; every test checks that no refused answer carries a secret, and that the
refused calls changed nothing (IAM enforcement stays on, the canary stays).

No test prints a response body: an answer that should have been refused would hold
every secret in plain text. Assertions on bodies are on booleans and names only.
"""

from __future__ import annotations

import contextlib
import http.client
import stat
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from vaultdr.aws import Aws, AwsCredentials, AwsTarget
from vaultdr.envs.local import awsemu, emulator
from vaultdr.envs.local.awsemu import AwsStack
from vaultdr.envs.local.processes import LOOPBACK, ProcessRecord, free_port, stop_pid
from vaultdr.errors import AwsError

REGION = "us-east-1"
CANARY_PARAMETER = "/vaultdr/guard/root-token"


@dataclass(frozen=True)
class Emulator:
    record: ProcessRecord
    port: int
    url: str
    dir: Path

    @property
    def token_file(self) -> Path:
        return awsemu.control_token_file(self.dir)


@dataclass(frozen=True)
class Guarded:
    emu: Emulator
    stack: AwsStack
    canary: str

    def secrets(self) -> dict[str, str]:
        """Every secret value the emulator holds, by a printable name."""
        return {
            "canary parameter": self.canary,
            "admin secret key": self.stack.admin.secret_access_key,
            "seal secret key": self.stack.seal.secret_access_key,
            "snapshot secret key": self.stack.snapshot.secret_access_key,
            "control token": self.emu.token_file.read_text().strip(),
        }

    def leaked(self, body: bytes) -> list[str]:
        """The names (never the values) of the secrets found in ``body``."""
        return [name for name, value in self.secrets().items() if value.encode() in body]


@contextlib.contextmanager
def _start(base: Path) -> Iterator[Emulator]:
    port = free_port()
    record = awsemu.start_moto(base, port=port, log=base / "moto.log")
    try:
        yield Emulator(record=record, port=port, url=awsemu.endpoint_url(port), dir=base)
    finally:
        stop_pid(record.pid, record.start_time)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    with _start(tmp_path_factory.mktemp("moto")) as emu:
        stack = awsemu.bootstrap(emu.url, REGION, cluster="guard", bucket="vaultdr-guard-snaps")
        canary = f"canary-{uuid.uuid4().hex}"
        Aws(AwsTarget(REGION, emu.url, stack.admin)).put_secure_parameter(CANARY_PARAMETER, canary)
        yield Guarded(emu=emu, stack=stack, canary=canary)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Emulator]:
    """An emulator of its own, not bootstrapped."""
    with _start(tmp_path) as emu:
        yield emu


def request(
    port: int,
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes]:
    """Send ``target`` exactly as given (no normalization by a client library)."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        connection.request(method, target, body=body, headers=dict(headers or {}))
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def token_header(emu: Emulator) -> dict[str, str]:
    return {emulator.CONTROL_TOKEN_HEADER: emu.token_file.read_text().strip()}


def assert_refused(guarded: Guarded, status: int, body: bytes, what: str = "") -> None:
    """A guard refusal: no secret in it (checked first, by name), 403, the fixed text."""
    assert (what, guarded.leaked(body)) == (what, [])
    assert (what, status) == (what, 403)
    is_refusal = body == emulator.REFUSAL  # compared as a boolean: the body is never shown
    assert is_refusal, f"{what}: the answer is not the guard's refusal"


def assert_enforcement_on_and_canary_kept(guarded: Guarded) -> None:
    stranger = Aws(
        AwsTarget(REGION, guarded.emu.url, AwsCredentials("AKIAUNKNOWN000000000", "nope")),
        max_attempts=1,
    )
    with pytest.raises(AwsError):
        stranger.caller_identity()
    stored = guarded.stack.admin_aws().get_secure_parameter(CANARY_PARAMETER)
    kept = stored == guarded.canary
    assert kept, "the canary parameter was lost or changed"


# -- refusals ------------------------------------------------------------------------------


def test_an_unauthenticated_data_dump_is_refused_and_names_no_secret(guarded: Guarded) -> None:
    status, body = request(guarded.emu.port, "GET", "/moto-api/data.json")
    assert_refused(guarded, status, body)


@pytest.mark.parametrize("path", ["/moto-api/reset-auth", "/moto-api/reset"])
def test_unauthenticated_reset_and_reset_auth_are_refused_and_change_nothing(
    guarded: Guarded, path: str
) -> None:
    status, body = request(guarded.emu.port, "POST", path)
    assert_refused(guarded, status, body)
    assert_enforcement_on_and_canary_kept(guarded)


@pytest.mark.parametrize(
    "target",
    [
        "//moto-api/data.json",
        "///moto-api/data.json",
        "/%6Doto-api/data.json",
        "/%6d%6f%74%6f-api/data.json",
        "/%2Fmoto-api/data.json",
        "/%252Fmoto-api/data.json",
        "/%256Doto-api/data.json",
        "/./moto-api/data.json",
        "/x/../moto-api/data.json",
        "/MOTO-API/data.json",
        "/moto-api%2Fdata.json",
        "/moto-api",
        "/moto-api/",
        "/moto-api/data.json?x=1",
        "http://motoapi.amazonaws.com/moto-api/data.json",
        "/favicon.ico",
        "/latest/meta-data/iam/security-credentials/",
        "/latest/api/token",
    ],
)
def test_odd_spellings_of_the_control_api_are_refused(guarded: Guarded, target: str) -> None:
    for method in ("GET", "POST"):
        status, body = request(guarded.emu.port, method, target)
        assert_refused(guarded, status, body, what=method)
    assert_enforcement_on_and_canary_kept(guarded)


@pytest.mark.parametrize("service", ["motoapi.amazonaws.com", "169.254.169.254"])
def test_a_signed_request_that_moto_would_route_to_its_control_backends_is_refused(
    guarded: Guarded, service: str
) -> None:
    # moto picks the backend from the credential scope: these names reach moto_api and
    # the instance metadata whatever the path (no path check would see it).
    authorization = (
        f"AWS4-HMAC-SHA256 Credential=AKIAUNKNOWN000000000/20250101/{REGION}/{service}/"
        "aws4_request, SignedHeaders=host, Signature=00"
    )
    for target in ("/", "/anything"):
        status, body = request(
            guarded.emu.port, "GET", target, headers={"Authorization": authorization}
        )
        assert_refused(guarded, status, body, what=target)
        # With the token the same request does reach moto's backend (which has no such page).
        status, body = request(
            guarded.emu.port,
            "GET",
            target,
            headers={"Authorization": authorization, **token_header(guarded.emu)},
        )
        reached_moto = status != 403 and body != emulator.REFUSAL
        assert reached_moto, f"{target}: refused even with the control token"


@pytest.mark.parametrize("host", ["motoapi.amazonaws.com", "169.254.169.254"])
def test_a_control_host_header_gets_no_data(guarded: Guarded, host: str) -> None:
    for target in ("/", "/moto-api/data.json", "/latest/meta-data/"):
        status, body = request(guarded.emu.port, "GET", target, headers={"Host": host})
        assert (target, guarded.leaked(body)) == (target, [])
        assert (target, status >= 400) == (target, True)
    assert_enforcement_on_and_canary_kept(guarded)


def test_a_wrong_or_empty_token_is_refused(guarded: Guarded) -> None:
    right = guarded.emu.token_file.read_text().strip()
    for offered in (right + "x", right[:-1], "", " ", right.upper()):
        status, body = request(
            guarded.emu.port,
            "GET",
            "/moto-api/data.json",
            headers={emulator.CONTROL_TOKEN_HEADER: offered},
        )
        assert_refused(guarded, status, body)


# -- the token holder ----------------------------------------------------------------------


def test_with_the_control_token_the_data_dump_answers(guarded: Guarded) -> None:
    status, body = awsemu.control_request(
        guarded.emu.url, "/moto-api/data.json", token_file=guarded.emu.token_file
    )
    assert status == 200
    # Proof that it is moto's real dump; the body itself is never shown.
    has_canary = guarded.canary.encode() in body
    assert has_canary, "the authenticated data.json does not hold the canary parameter"


def test_the_control_token_file_is_private(guarded: Guarded) -> None:
    info = guarded.emu.token_file.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert len(guarded.emu.token_file.read_text().strip()) >= emulator.MIN_TOKEN_LENGTH


# -- readiness -----------------------------------------------------------------------------


def test_readiness_answers_before_the_bootstrap_and_does_not_spend_the_allowance(
    fresh: Emulator,
) -> None:
    for _ in range(2 * awsemu.UNAUTHENTICATED_CALLS + 2):
        status, body = request(fresh.port, "GET", emulator.READY_PATH)
        assert (status, body) == (200, b"ready")
        assert awsemu.moto_ready(fresh.url)
    # Refused control calls do not spend it either.
    assert request(fresh.port, "GET", "/moto-api/data.json")[0] == 403
    assert request(fresh.port, "GET", "/vaultdr-emulator/other")[0] == 404
    assert request(fresh.port, "POST", emulator.READY_PATH)[0] == 405
    stack = awsemu.bootstrap(fresh.url, REGION, cluster="ready", bucket="vaultdr-ready-snaps")
    assert stack.admin_aws().caller_identity()["Arn"].endswith(":user/vaultdr-admin")


def test_a_restart_replaces_a_stale_world_readable_token_file(tmp_path: Path) -> None:
    stale = awsemu.control_token_file(tmp_path)
    stale.write_text("stale-token-" + "x" * 40)
    stale.chmod(0o644)
    with _start(tmp_path) as emu:
        assert stat.S_IMODE(emu.token_file.stat().st_mode) == 0o600
        assert not emu.token_file.read_text().startswith("stale-token-")
        status, _ = awsemu.control_request(emu.url, "/moto-api/", token_file=emu.token_file)
        assert status == 200
        stale_header = {emulator.CONTROL_TOKEN_HEADER: "stale-token-" + "x" * 40}
        assert request(emu.port, "GET", "/moto-api/", headers=stale_header)[0] == 403


# -- the guard's own checks (no process) ---------------------------------------------------


def test_the_emulator_refuses_a_token_file_that_others_can_read(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t" * 43)
    token_file.chmod(0o640)
    with pytest.raises(emulator.ControlTokenError, match="0600"):
        emulator.read_control_token(token_file)
    token_file.chmod(0o600)
    assert emulator.read_control_token(token_file) == "t" * 43
    token_file.write_text("short")
    with pytest.raises(emulator.ControlTokenError, match="shorter"):
        emulator.read_control_token(token_file)
    assert emulator.main(["-p", "1", "--control-token-file", str(tmp_path / "missing")]) == 2


def test_control_paths_are_recognized_however_they_are_spelled() -> None:
    for path in (
        "/moto-api/data.json",
        "//moto-api//reset",
        "/%2e/moto-api/reset-auth",
        "/a/b/../../MOTO-API/",
        "\\moto-api\\data.json",
        "/%25%36%44oto-api/data.json",
        "/favicon.ico",
        "/latest/meta-data/",
        "/latest/api/token",
        "http://127.0.0.1:5000/moto-api/data.json?x",
    ):
        assert emulator.is_control_path(path), path
    for path in ("/", "/vaultdr-guard-snaps/moto-api/x", "/latest/other", "/bucket/key"):
        assert not emulator.is_control_path(path), path
