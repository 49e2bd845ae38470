"""What tests/test_kind_e2e.py relies on in the fake API and its kubelet, each shown alone and
fast (no server processes): signed service-account tokens, TokenReview with its RBAC, the
root CA publisher, the HTTPS listener, OpenBao's JSON patch of its labels, and the
kubelet's cluster DNS (the CONNECT proxy's name resolution)."""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import kubernetes.client
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fake_kube import API_AUDIENCE, FakeCluster, FakeKubeApi
from tests.fake_kubelet import FakeKubelet
from vaultdr.envs.local.kubeapi.tokens import TokenAuthority
from vaultdr.envs.tls import LocalCA

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def cluster() -> FakeCluster:
    cluster = FakeCluster(service_accounts=("openbao", "web"))
    cluster.use_token_authority(TokenAuthority(KEY, API_AUDIENCE))
    cluster.populate()
    return cluster


def raw(
    kube_api: FakeKubeApi,
    bearer: str,
    method: str,
    path: str,
    body: object,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    """One request as OpenBao's Go clients send it (plain HTTP with a bearer token)."""
    request = urllib.request.Request(
        kube_api.url + path, data=json.dumps(body).encode(), method=method
    )
    request.add_header("Authorization", f"Bearer {bearer}")
    request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(json.loads(answer.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.loads(exc.read()))


def review(
    kube_api: FakeKubeApi, reviewer: str, token: str, audiences: list[str]
) -> dict[str, Any]:
    """OpenBao's TokenReview (builtin/credential/kubernetes/token_review.go): its answer's status."""
    code, answer = raw(
        kube_api,
        reviewer,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"kind": "TokenReview", "spec": {"token": token, "audiences": audiences}},
    )
    assert code == 201, answer
    return dict(answer["status"])


def delegate(cluster: FakeCluster, account: str) -> None:
    """The ops chart's ClusterRoleBinding of ``account`` to system:auth-delegator."""
    cluster.put_rbac(
        {
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{account}-auth-delegator"},
            "roleRef": {"kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "vaultdr"}],
        }
    )


def test_tokens_are_signed_jwts_with_the_claims_openbao_reads(cluster: FakeCluster) -> None:
    token = cluster.mint_token("vaultdr", "web", audiences=["vault"])
    claims = jwt.decode(token, KEY.public_key(), algorithms=["RS256"], audience="vault")
    assert claims["sub"] == "system:serviceaccount:vaultdr:web"
    assert claims["iss"] == API_AUDIENCE
    assert claims["kubernetes.io"]["namespace"] == "vaultdr"
    assert claims["kubernetes.io"]["serviceaccount"] == {
        "name": "web",
        "uid": cluster.uid("serviceaccounts", "web"),
    }


def test_a_token_review_answers_user_uid_and_audiences(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    delegate(cluster, "openbao")
    reviewer = cluster.mint_token("vaultdr", "openbao")
    web = cluster.mint_token("vaultdr", "web", audiences=["vault"])

    status = review(kube_api, reviewer, web, ["vault"])

    assert status["authenticated"] is True
    assert status["audiences"] == ["vault"]
    user = status["user"]
    assert isinstance(user, dict)
    assert user["username"] == "system:serviceaccount:vaultdr:web"
    assert user["uid"] == cluster.uid("serviceaccounts", "web")
    assert review(kube_api, reviewer, web, ["other"])["authenticated"] is False
    # An account deleted (and made again) since: its old tokens are refused.
    with cluster.lock:
        del cluster.objects[("serviceaccounts", "vaultdr", "web")]
        cluster.add_service_account("vaultdr", "web")
    assert review(kube_api, reviewer, web, ["vault"])["authenticated"] is False


def test_a_reviewer_without_the_auth_delegator_binding_is_refused(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    reviewer = cluster.mint_token("vaultdr", "web")
    token = cluster.mint_token("vaultdr", "web", audiences=["vault"])
    code, answer = raw(
        kube_api,
        reviewer,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"kind": "TokenReview", "spec": {"token": token, "audiences": ["vault"]}},
    )
    assert code == 403
    assert 'cannot create resource "tokenreviews"' in answer["message"]


def test_every_new_namespace_gets_the_cluster_ca(cluster: FakeCluster) -> None:
    cluster.root_ca_pem = "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"
    cluster.add_namespace("apps")
    found = cluster.get("configmaps", "apps", "kube-root-ca.crt")
    assert found is not None and found["data"]["ca.crt"] == cluster.root_ca_pem


def test_the_https_listener_is_kubernetes_default_svc(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    ca = LocalCA(tmp_path / "ca")
    (tmp_path / "tls").mkdir()
    pair = ca.issue_server_cert(
        "kube", tmp_path / "tls", hosts=["kubernetes.default.svc", "127.0.0.1"]
    )
    port = kube_api.serve_tls(pair.cert, pair.key)
    configuration = kubernetes.client.Configuration()
    configuration.host = f"https://127.0.0.1:{port}"
    configuration.ssl_ca_cert = str(ca.cert_path)
    configuration.api_key = {"authorization": "Bearer fake-admin-token"}
    with kubernetes.client.ApiClient(configuration) as client:
        names = [
            n.metadata.name if n.metadata else ""
            for n in kubernetes.client.CoreV1Api(client).list_namespace().items
        ]
    assert "vaultdr" in names


def test_openbao_labels_its_pod_by_json_patch_under_the_discovery_role(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    cluster.put_rbac(
        {
            "kind": "Role",
            "metadata": {"name": "openbao-discovery-role", "namespace": "vaultdr"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}],
        }
    )
    cluster.put_rbac(
        {
            "kind": "RoleBinding",
            "metadata": {"name": "openbao-discovery-rolebinding", "namespace": "vaultdr"},
            "roleRef": {"kind": "Role", "name": "openbao-discovery-role"},
            "subjects": [{"kind": "ServiceAccount", "name": "openbao", "namespace": "vaultdr"}],
        }
    )
    # As internal/serviceregistration/kubernetes/retry_handler.go sends them.
    patch = [
        {"op": "add", "path": "/metadata/labels/openbao-active", "value": "true"},
        {"op": "replace", "path": "/metadata/labels/openbao-sealed", "value": "false"},
    ]
    path = "/api/v1/namespaces/vaultdr/pods/openbao-1"
    server = cluster.mint_token("vaultdr", "openbao")
    code, _ = raw(kube_api, server, "PATCH", path, patch, "application/json-patch+json")
    assert code == 200
    pod = cluster.get("pods", "vaultdr", "openbao-1")
    assert pod is not None
    labels = pod["metadata"]["labels"]
    assert labels["openbao-active"] == "true" and labels["openbao-sealed"] == "false"
    web = cluster.mint_token("vaultdr", "web")
    code, _ = raw(kube_api, web, "PATCH", path, patch, "application/json-patch+json")
    assert code == 403


def test_the_kubelets_cluster_dns(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    """Names resolve as CoreDNS + kube-proxy would, to the endpoint that serves now."""
    kubelet = FakeKubelet(
        kube_api,
        tmp_path / "node",
        api_tls_port=6443,
        ca_pem="",
        bao=Path("/nonexistent"),
        venv_bin=Path(sys.executable).parent,
    )
    try:
        with cluster.lock:
            for i in range(3):
                pod = cluster.get("pods", "vaultdr", f"openbao-{i}")
                assert pod is not None
                pod["status"]["podIP"] = f"127.0.100.{10 + i}"
            selector = {"app.kubernetes.io/instance": "openbao", "component": "server"}
            for name, extra in (
                ("openbao-internal", {}),
                ("openbao-active", {"openbao-active": "true"}),
            ):
                cluster.put(
                    "services",
                    "vaultdr",
                    name,
                    {
                        "metadata": {"name": name},
                        "spec": {
                            "selector": {**selector, **extra},
                            "ports": [{"port": 8200, "targetPort": 8200}],
                        },
                    },
                )
        assert kubelet.resolve("kubernetes.default.svc", 443) == ("127.0.0.1", 6443)
        assert kubelet.resolve("openbao-2.openbao-internal", 8200) == ("127.0.100.12", 8200)
        assert kubelet.resolve("openbao-1.openbao-internal.vaultdr.svc", 8200) == (
            "127.0.100.11",
            8200,
        )
        assert kubelet.resolve("openbao-active.vaultdr.svc", 8200) == ("127.0.100.10", 8200)
        assert kubelet.resolve("nothing.vaultdr.svc", 8200) is None
        # Through the proxy: an unknown name is a 502, and nothing listens beyond loopback.
        with socket.create_connection(("127.0.100.1", kubelet.proxy.port), timeout=5) as conn:
            conn.sendall(b"CONNECT nothing.vaultdr.svc:8200 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(100).startswith(b"HTTP/1.1 502")
    finally:
        kubelet.stop()
