"""The kube environments (kind, eks) against a fake Kubernetes API over HTTP and the real moto.

The Kubernetes API is faked at the network edge only (tests/fake_kube.py): the
official client sends real requests and parses complete objects. The engine's
``sys/leader`` is answered by small HTTP servers the tests control; KMS access is
revoked and restored on a real moto server with IAM enforced.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fake_kube import FakeCluster, FakeKubeApi
from tests.kube_rbac import agent_api, install_ops_rbac
from vaultdr import faults
from vaultdr.agents import snapshot as snap
from vaultdr.aws import Aws, AwsCredentials, AwsTarget
from vaultdr.chaos import probes, session
from vaultdr.config import Kube, Stack, load_stack
from vaultdr.envs import common
from vaultdr.envs.kube import deploy
from vaultdr.envs.kube.agents import RESTORE_ANNOTATION, PodRestoreTarget, PodSettings
from vaultdr.envs.kube.clusters import EksEnvironment, KindEnvironment
from vaultdr.envs.kube.env import (
    ALLOW_ANNOTATION,
    CONFIRM_FLAG,
    DestructiveFaultRefused,
    KubeEnvironment,
)
from vaultdr.envs.local import awsemu
from vaultdr.envs.local.processes import free_port, stop_pid
from vaultdr.errors import (
    EXIT_REFUSED,
    EXIT_TOOL_MISSING,
    AccessDenied,
    ConfigError,
    EnvironmentStartError,
    FaultError,
)
from vaultdr.ledger import WriteLedger
from vaultdr.principals import REVOKE_KMS_POLICY, SEAL, for_emulator, revoke_kms_policy

REPO = Path(__file__).resolve().parent.parent
NS = "vaultdr"


# --- the engine's API, as far as leader() asks it --------------------------------------------
class FakeVaultNodes:
    """One HTTP listener per node answering ``sys/leader``; ``leader`` says who is active.

    kv-v2 writes under ``secret/`` are kept (one store for the cluster) and read back at
    their version until ``lose_data()``: then every read is a 404, as from a cluster
    restored from a snapshot older than the writes."""

    def __init__(self, names: list[str], leader: str) -> None:
        self.leader = leader
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self.kv: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        for name in names:

            class Handler(BaseHTTPRequestHandler):
                node = name
                nodes = self

                def log_message(self, format: str, *args: Any) -> None:
                    pass

                def answer(self, code: int, data: dict[str, Any]) -> None:
                    body = json.dumps(data).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def do_GET(self) -> None:
                    path, _, query = self.path.partition("?")
                    if path.startswith("/v1/secret/data/"):
                        key = path.removeprefix("/v1/secret/data/")
                        version = int(query.removeprefix("version=") or 0)
                        with self.nodes.lock:
                            versions = self.nodes.kv.get(key, [])
                        if not 0 < version <= len(versions):
                            return self.answer(404, {"errors": []})
                        data = {"data": versions[version - 1], "metadata": {"version": version}}
                        return self.answer(200, {"data": data})
                    is_self = self.node == self.nodes.leader
                    return self.answer(
                        200, {"ha_enabled": True, "is_self": is_self, "leader_address": ""}
                    )

                def do_POST(self) -> None:
                    path = self.path.partition("?")[0]
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if path.startswith("/v1/secret/data/"):
                        key = path.removeprefix("/v1/secret/data/")
                        with self.nodes.lock:
                            self.nodes.kv.setdefault(key, []).append(body.get("data", {}))
                            version = len(self.nodes.kv[key])
                        return self.answer(200, {"data": {"version": version}})
                    return self.answer(204 if path.startswith("/v1/secret/metadata/") else 404, {})

                do_PUT = do_POST

            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers[name] = server

    def lose_data(self) -> None:
        with self.lock:
            self.kv.clear()

    def address(self, name: str) -> str:
        return f"http://127.0.0.1:{self.servers[name].server_address[1]}"

    def stop(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


class ReachableNodes:
    """Mixin: node addresses are the fake engine's listeners (instead of port-forwards)."""

    nodes: FakeVaultNodes

    def node_address(self, node: str) -> str:
        return self.nodes.address(node)


class KindOnFake(ReachableNodes, KindEnvironment):
    pass


class EksOnFake(ReachableNodes, EksEnvironment):
    pass


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def cluster() -> FakeCluster:
    fake = FakeCluster(namespace=NS)
    fake.populate()
    fake.add_secret("openbao-tls", {"ca.crt": "-----BEGIN CERTIFICATE-----\n", "tls.crt": "x"})
    return fake


@pytest.fixture
def vault_nodes() -> Iterator[FakeVaultNodes]:
    nodes = FakeVaultNodes([f"openbao-{i}" for i in range(3)], leader="openbao-0")
    yield nodes
    nodes.stop()


def kube_stack(**kube: Any) -> Stack:
    return Stack(cluster="vaultdr-kind", kube=Kube(**kube))


def make_env(
    cls: type[KubeEnvironment],
    tmp_path: Path,
    kube_api: FakeKubeApi,
    vault_nodes: FakeVaultNodes,
    *,
    context: str,
    stack: Stack | None = None,
    **kwargs: Any,
) -> Any:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", context)
    env = cls(tmp_path / "state", stack or kube_stack(), kubeconfig=str(kubeconfig), **kwargs)
    env.nodes = vault_nodes  # type: ignore[attr-defined]
    return env


@pytest.fixture
def kind_env(tmp_path: Path, kube_api: FakeKubeApi, vault_nodes: FakeVaultNodes) -> Any:
    return make_env(KindOnFake, tmp_path, kube_api, vault_nodes, context="kind-vaultdr")


def delete_query(cluster: FakeCluster, path: str) -> dict[str, list[str]]:
    found = [r for r in cluster.requests if r.method == "DELETE" and r.path == path]
    assert found, f"no DELETE {path}"
    return found[0].query


POD = f"/api/v1/namespaces/{NS}/pods"
GRACEFUL = "graceful: the pod's termination grace"
PVC = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"


# --- the faults ------------------------------------------------------------------------------------
def test_kill_leader_deletes_the_pod_labelled_active_gracefully(
    kind_env: Any, cluster: FakeCluster
) -> None:
    entry = faults.inject(kind_env, "kill-leader")

    assert entry.detail["nodes"] == ["openbao-0"]
    assert cluster.mutations() == [("DELETE", f"{POD}/openbao-0")]
    assert "gracePeriodSeconds" not in delete_query(cluster, f"{POD}/openbao-0")
    deleting = cluster.get("pods", NS, "openbao-0")  # the pod's own grace applies
    assert deleting is not None and deleting["metadata"]["deletionGracePeriodSeconds"] == 1
    label_queries = [
        r.query["labelSelector"][0]
        for r in cluster.requests
        if r.method == "GET" and r.path == POD and "labelSelector" in r.query
    ]
    assert any("openbao-active=true" in q for q in label_queries)


def test_a_stale_active_label_is_checked_against_the_engine(
    kind_env: Any, cluster: FakeCluster, vault_nodes: FakeVaultNodes
) -> None:
    vault_nodes.leader = "openbao-2"  # the label still says openbao-0

    faults.inject(kind_env, "kill-leader")

    assert cluster.mutations() == [("DELETE", f"{POD}/openbao-2")]


def test_hashicorp_vault_is_found_by_its_own_label(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster, vault_nodes: FakeVaultNodes
) -> None:
    for (kind, _, _), obj in cluster.objects.items():
        if kind == "pods":
            labels = obj["metadata"]["labels"]
            labels["vault-active"] = labels.pop("openbao-active")
    stack = Stack(cluster="vaultdr-kind", engine={"kind": "vault"}, kube=Kube())  # type: ignore[arg-type]
    env = make_env(KindOnFake, tmp_path, kube_api, vault_nodes, context="kind-vaultdr", stack=stack)

    assert env.leader() == "openbao-0"
    selectors = [r.query.get("labelSelector", [""])[0] for r in cluster.requests]
    assert any("vault-active=true" in s for s in selectors)


def test_delete_volume_deletes_the_pvc_then_its_pod(kind_env: Any, cluster: FakeCluster) -> None:
    old_pvc = cluster.uid("persistentvolumeclaims", "data-openbao-1")

    faults.inject(kind_env, "delete-volume", ["openbao-1"])

    assert cluster.mutations() == [
        ("DELETE", f"{PVC}/data-openbao-1"),
        ("DELETE", f"{POD}/openbao-1"),
    ]
    assert "gracePeriodSeconds" not in delete_query(cluster, f"{POD}/openbao-1")
    new_pvc = cluster.uid("persistentvolumeclaims", "data-openbao-1")
    assert new_pvc and new_pvc != old_pvc  # the StatefulSet made a new, empty claim


def test_a_pvc_deleted_under_its_pod_is_held_until_the_pod_goes(
    kind_env: Any, cluster: FakeCluster
) -> None:
    api = kind_env.api
    api.delete_pvc(NS, "data-openbao-2")
    held = api.read_pvc(NS, "data-openbao-2")
    assert held is not None and held.deleting
    assert "kubernetes.io/pvc-protection" in held.finalizers

    api.delete_pod(NS, "openbao-2")
    still = api.read_pvc(NS, "data-openbao-2")  # the pod is terminating: it still uses it
    assert still is not None and still.uid == held.uid and still.deleting

    cluster.advance(1)  # the pod's grace is over: it goes, and the claim with it
    again = api.read_pvc(NS, "data-openbao-2")
    assert again is not None and again.uid != held.uid and not again.deleting


def test_total_loss_deletes_every_pvc_before_any_pod(kind_env: Any, cluster: FakeCluster) -> None:
    faults.inject(kind_env, "delete-all-volumes")

    mutations = cluster.mutations()
    assert mutations[:3] == [("DELETE", f"{PVC}/data-openbao-{i}") for i in range(3)]
    assert sorted(mutations[3:]) == [("DELETE", f"{POD}/openbao-{i}") for i in range(3)]
    for i in range(3):
        assert "gracePeriodSeconds" not in delete_query(cluster, f"{POD}/openbao-{i}")


def test_kill_quorum_deletes_the_leader_and_one_more(kind_env: Any, cluster: FakeCluster) -> None:
    faults.inject(kind_env, "kill-quorum")

    deleted = sorted(path for _, path in cluster.mutations())
    assert deleted == [f"{POD}/openbao-0", f"{POD}/openbao-1"]


def test_service_account_tokens_come_from_the_token_request_api(
    kind_env: Any, cluster: FakeCluster
) -> None:
    token = kind_env.service_account_token("vaultdr", "web", audiences=["vault"], ttl=600)

    assert token.startswith("eyJ")
    post = next(r for r in cluster.requests if r.method == "POST")
    assert post.path == f"/api/v1/namespaces/{NS}/serviceaccounts/web/token"
    assert post.body["kind"] == "TokenRequest"
    assert post.body["apiVersion"] == "authentication.k8s.io/v1"
    assert post.body["spec"] == {"audiences": ["vault"], "expirationSeconds": 600}


def test_release_scales_the_statefulset_back_after_a_hold(
    kind_env: Any, cluster: FakeCluster
) -> None:
    cluster.get("statefulsets", NS, "openbao")["spec"]["replicas"] = 1  # type: ignore[index]

    kind_env.release_nodes(["openbao-1", "openbao-2"])

    patch = next(r for r in cluster.requests if r.method == "PATCH")
    assert patch.path == f"/apis/apps/v1/namespaces/{NS}/statefulsets/openbao/scale"
    assert patch.body == {"spec": {"replicas": 3}}


# freeze-node / thaw-node by exec: tests/test_kube_small.py


def test_kind_faults_act_only_in_the_kind_clusters_context(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster, vault_nodes: FakeVaultNodes
) -> None:
    env = make_env(KindOnFake, tmp_path, kube_api, vault_nodes, context="prod-cluster")
    with pytest.raises(Exception, match="kube context 'kind-vaultdr' is not in the kubeconfig"):
        faults.inject(env, "kill-node", ["openbao-1"])
    assert cluster.mutations() == []


# --- safety on eks ---------------------------------------------------------------------------------------
EKS_CONTEXT = "arn:aws:eks:us-east-1:123456789012:cluster/prod"


def eks_env(
    tmp_path: Path, kube_api: FakeKubeApi, vault_nodes: FakeVaultNodes, **kwargs: Any
) -> Any:
    return make_env(EksOnFake, tmp_path, kube_api, vault_nodes, context=EKS_CONTEXT, **kwargs)


def annotate(cluster: FakeCluster, value: str = "true") -> None:
    ns = cluster.get("namespaces", "", NS)
    assert ns is not None
    ns["metadata"]["annotations"][ALLOW_ANNOTATION] = value


def test_eks_refuses_destructive_faults_without_the_namespace_opt_in(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    vault_nodes: FakeVaultNodes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VAULTDR_I_KNOW_THIS_BREAKS", raising=False)
    env = eks_env(tmp_path, kube_api, vault_nodes, confirm_context=EKS_CONTEXT)

    with pytest.raises(DestructiveFaultRefused) as refused:
        faults.inject(env, "kill-leader")

    assert f'kubectl annotate namespace {NS} {ALLOW_ANNOTATION}="true"' in refused.value.hint
    assert cluster.mutations() == []
    assert not (env.state_dir / faults.JOURNAL_FILE).exists()


def test_eks_refuses_when_the_command_names_another_context(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    vault_nodes: FakeVaultNodes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VAULTDR_I_KNOW_THIS_BREAKS", raising=False)
    annotate(cluster)
    for named in (None, "kind-vaultdr"):
        env = eks_env(tmp_path, kube_api, vault_nodes, confirm_context=named)
        with pytest.raises(DestructiveFaultRefused) as refused:
            faults.inject(env, "delete-volume", ["openbao-1"])
        assert f"--i-know-this-breaks {EKS_CONTEXT}" in refused.value.hint
        assert "annotate" not in refused.value.hint
    assert cluster.mutations() == []


def test_eks_accepts_with_the_opt_in_and_the_named_context(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    vault_nodes: FakeVaultNodes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    annotate(cluster)
    monkeypatch.setenv("VAULTDR_I_KNOW_THIS_BREAKS", EKS_CONTEXT)
    env = eks_env(tmp_path, kube_api, vault_nodes)

    faults.inject(env, "kill-node", ["openbao-2"])

    assert cluster.mutations() == [("DELETE", f"{POD}/openbao-2")]


def test_eks_refuses_a_context_other_than_the_stacks(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster, vault_nodes: FakeVaultNodes
) -> None:
    annotate(cluster)
    stack = Stack(cluster="vaultdr-eks", kube=Kube(context="staging"))
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "staging")
    env = EksOnFake(tmp_path / "s", stack, kubeconfig=str(kubeconfig), confirm_context="other")
    env.nodes = vault_nodes
    with pytest.raises(DestructiveFaultRefused):
        faults.inject(env, "kill-node", ["openbao-0"])
    assert cluster.mutations() == []


def test_a_dry_run_lists_every_change_and_sends_no_mutating_request(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster, vault_nodes: FakeVaultNodes
) -> None:
    env = eks_env(tmp_path, kube_api, vault_nodes)  # no opt-in, no confirmation

    changes = faults.preview(env, "delete-all-volumes")

    assert changes[:3] == [f"delete pvc {NS}/data-openbao-{i}" for i in range(3)]
    assert changes[3:6] == [f"delete pod {NS}/openbao-{i} ({GRACEFUL})" for i in range(3)]
    assert "would be refused" in changes[6]
    assert cluster.mutations() == []
    assert not (env.state_dir / faults.JOURNAL_FILE).exists()


# --- revoke-kms on the real emulator -------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[awsemu.AwsStack]:
    directory = tmp_path_factory.mktemp("moto")
    port = free_port()
    record = awsemu.start_moto(directory, port=port, log=directory / "moto.log")
    try:
        yield awsemu.bootstrap(
            awsemu.endpoint_url(port), "us-east-1", cluster="vaultdr-kind", bucket="snaps"
        )
    finally:
        stop_pid(record.pid, record.start_time, grace=5.0)


def can_decrypt(aws: Aws, blob: bytes) -> bool:
    try:
        return aws.decrypt(blob) == b"unseal me"
    except AccessDenied:
        return False


def test_revoke_kms_on_kind_denies_the_seal_user_until_restored(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    vault_nodes: FakeVaultNodes,
    moto: awsemu.AwsStack,
) -> None:
    add_aws_secrets(cluster, moto)
    stack = Stack(
        cluster="vaultdr-kind",
        kube=Kube(seal_principal=moto.seal_user, aws_endpoint=moto.endpoint_url),
    )
    env = make_env(KindOnFake, tmp_path, kube_api, vault_nodes, context="kind-vaultdr", stack=stack)
    blob = moto.admin_aws().encrypt(moto.kms_key_id, b"unseal me")
    seal = moto.seal_aws()
    assert can_decrypt(seal, blob)

    faults.inject(env, "revoke-kms")
    try:
        # The moment revoke-kms returns, the seal's own Decrypt is refused: it waited.
        assert not can_decrypt(seal, blob)
        assert common.kms_revoked(moto.admin_aws(), moto.seal_user)
        assert env.kms_revoked()
    finally:
        results = faults.rollback(env)

    assert [r.fault for r in results] == ["revoke-kms"]
    assert not common.kms_revoked(moto.admin_aws(), moto.seal_user)
    assert can_decrypt(seal, blob)
    # It checked with the seal's own keys (its Secret), besides acting as the admin.
    secret_reads = [r.path for r in cluster.requests if "/secrets/" in r.path]
    assert secret_reads == [
        f"/api/v1/namespaces/{NS}/secrets/vaultdr-aws-admin",
        f"/api/v1/namespaces/{NS}/secrets/vaultdr-aws-seal",
    ]


def add_aws_secrets(cluster: FakeCluster, moto: awsemu.AwsStack) -> None:
    """The emulator's Secrets of the admin and the seal, as its bootstrap Job writes them."""
    for principal, creds in (("admin", moto.admin), ("seal", moto.seal)):
        cluster.add_secret(
            f"vaultdr-aws-{principal}",
            {
                "AWS_ACCESS_KEY_ID": creds.access_key_id,
                "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
            },
        )


def test_revoke_kms_on_kind_fails_clearly_when_the_deny_never_reaches_the_seal(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    vault_nodes: FakeVaultNodes,
    moto: awsemu.AwsStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # kube.seal_principal names another user than the one whose keys the seal runs with:
    # the deny lands, but the seal can still decrypt, so the fault is not in force.
    add_aws_secrets(cluster, moto)
    monkeypatch.setattr(common, "REVOKE_WAIT", 1.5)
    stack = Stack(
        cluster="vaultdr-kind",
        kube=Kube(seal_principal=moto.restore_user, aws_endpoint=moto.endpoint_url),
    )
    env = make_env(KindOnFake, tmp_path, kube_api, vault_nodes, context="kind-vaultdr", stack=stack)
    try:
        with pytest.raises(FaultError, match="not in force after 2 s") as err:
            faults.inject(env, "revoke-kms")
        assert "kube.seal_principal" in err.value.hint
    finally:
        faults.rollback(env)
    # The fault engine undid the half-made fault: no deny is left on anyone.
    assert not common.kms_revoked(moto.admin_aws(), moto.restore_user)
    assert can_decrypt(moto.seal_aws(), moto.seal_aws().encrypt(moto.kms_key_id, b"unseal me"))


def test_revoke_kms_on_eks_puts_the_deny_on_the_seal_role_and_rollback_lifts_it(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    vault_nodes: FakeVaultNodes,
    moto: awsemu.AwsStack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    def client(service: str, creds: AwsCredentials, token: str | None = None) -> Any:
        return boto3.client(
            service,
            region_name="us-east-1",
            endpoint_url=moto.endpoint_url,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=token,
        )

    iam = client("iam", moto.admin)
    oidc = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"},
            {  # IRSA, as environments/eks/terraform/iam.tf writes it
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{oidc}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{oidc}:sub": f"system:serviceaccount:{NS}:openbao",
                        f"{oidc}:aud": "sts.amazonaws.com",
                    }
                },
            },
        ],
    }
    role = iam.create_role(RoleName="vaultdr-seal-irsa", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName="vaultdr-seal-irsa",
        PolicyName="seal",
        PolicyDocument=json.dumps(for_emulator(SEAL)),
    )
    assumed = client("sts", moto.admin).assume_role(
        RoleArn=role["Role"]["Arn"], RoleSessionName="seal"
    )["Credentials"]
    seal = client(
        "kms",
        AwsCredentials(assumed["AccessKeyId"], assumed["SecretAccessKey"]),
        assumed["SessionToken"],
    )
    blob = moto.admin_aws().encrypt(moto.kms_key_id, b"unseal me")

    def role_can_decrypt() -> bool:
        try:
            return bool(seal.decrypt(CiphertextBlob=blob)["Plaintext"] == b"unseal me")
        except seal.exceptions.ClientError:
            return False

    assert role_can_decrypt()
    # eks: AWS through the default credential chain (here: the environment).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.admin.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.admin.secret_access_key)
    monkeypatch.setenv("VAULTDR_I_KNOW_THIS_BREAKS", EKS_CONTEXT)
    annotate(cluster)
    stack = Stack(
        cluster="vaultdr-eks",
        kube=Kube(
            seal_principal=role["Role"]["Arn"],
            kms_key_id=moto.kms_key_id,
            aws_endpoint=moto.endpoint_url,
        ),
    )
    env = eks_env(tmp_path, kube_api, vault_nodes, stack=stack)
    admin = Aws(AwsTarget("us-east-1", moto.endpoint_url, moto.admin))

    faults.inject(env, "revoke-kms")
    try:
        # The moment revoke-kms returns, the seal role's Decrypt is refused: it waited...
        assert not role_can_decrypt()
        deny = admin.get_role_policy("vaultdr-seal-irsa", REVOKE_KMS_POLICY)
        assert deny == revoke_kms_policy()
        # ... checking as the seal role itself, got as the server pod's SDK gets it (IRSA):
        # a token of the server's service account for STS, exchanged for the role.
        (token_request,) = [r for r in cluster.requests if r.path.endswith("/token")]
        assert token_request.path == f"/api/v1/namespaces/{NS}/serviceaccounts/openbao/token"
        assert token_request.body["spec"]["audiences"] == ["sts.amazonaws.com"]
        assert (
            env.aws("seal")
            .caller_identity()["Arn"]
            .startswith("arn:aws:sts::123456789012:assumed-role/vaultdr-seal-irsa/")
        )
    finally:
        monkeypatch.delenv("VAULTDR_I_KNOW_THIS_BREAKS")  # rollback never needs it
        faults.rollback(EksEnvironment(tmp_path / "state", stack, kubeconfig=env.kubeconfig))

    assert admin.get_role_policy("vaultdr-seal-irsa", REVOKE_KMS_POLICY) is None
    assert role_can_decrypt()


# --- up / down -------------------------------------------------------------------------------------------
def test_up_on_kind_names_every_missing_tool(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaultdr.cli",
            "up",
            "--env",
            "kind",
            "--state-dir",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PATH": str(empty)},
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_TOOL_MISSING, result.stderr
    assert "missing on PATH: kind, docker, helm" in result.stderr
    assert "kind.sigs.k8s.io" in result.stderr and "helm.sh" in result.stderr
    assert "docs.docker.com" in result.stderr


def test_check_tools_names_only_what_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kind", "docker"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    with pytest.raises(EnvironmentStartError) as err:
        deploy.check_tools(["kind", "docker", "helm"], path=str(bin_dir))
    assert err.value.message.startswith("missing on PATH: helm ")


def test_the_ops_chart_is_told_the_official_charts_fullname(tmp_path: Path) -> None:
    """A release not named after the chart: its StatefulSet and services are
    ``<release>-openbao-*``, and the agents must address those, with no hand edit."""
    stack_file = REPO / "environments/kind/stack.yaml"
    stack = load_stack(stack_file)
    assert stack.kube is not None
    stack = stack.model_copy(update={"kube": stack.kube.model_copy(update={"release": "prod"})})
    env = KindEnvironment(tmp_path / "state", stack, stack_file=str(stack_file))
    ops = deploy.helm_install_ops(env)
    assert ops[ops.index("vault.release=prod-openbao") - 1] == "--set"
    assert env.statefulset() == "prod-openbao"


def test_up_on_kind_runs_these_command_lines(tmp_path: Path) -> None:
    stack_file = REPO / "environments/kind/stack.yaml"
    env = KindEnvironment(tmp_path / "state", load_stack(stack_file), stack_file=str(stack_file))
    commands = [s.argv for s in deploy.plan_up(env) if s.argv]
    kind_dir = REPO / "environments/kind"
    image = deploy.agent_image(env)
    assert image.startswith("vaultdr-agent:")
    assert commands == [
        ["kind", "create", "cluster", "--name", "vaultdr", "--config", str(kind_dir / "kind-config.yaml"), "--wait", "120s"],
        ["docker", "build", "--tag", image, "--file", str(REPO / "Dockerfile"), str(REPO)],
        ["kind", "load", "docker-image", image, "--name", "vaultdr"],
        ["helm", "repo", "add", "openbao", "https://openbao.github.io/openbao-helm", "--force-update"],
        [
            "helm", "upgrade", "--install", "openbao", "openbao/openbao", "--version", "0.27.0",
            "--namespace", "vaultdr", "--values", str(kind_dir / "openbao-values.yaml"),
            "--kube-context", "kind-vaultdr",
        ],
        [
            "helm", "upgrade", "--install", "vaultdr-ops", str(REPO / "environments/chart/vaultdr-ops"),
            "--namespace", "vaultdr", "--values", str(kind_dir / "ops-values.yaml"),
            "--values", str(tmp_path / "state" / "ops-stack-values.yaml"),
            "--set", "vault.release=openbao",
            "--set", f"image.repository=vaultdr-agent,image.tag={image.split(':')[1]}",
            "--wait", "--timeout", "600s", "--kube-context", "kind-vaultdr",
        ],
    ]  # fmt: skip
    steps = [s.show() for s in deploy.plan_up(env)]
    assert any("aws-emulator.yaml" in s for s in steps)
    assert any("initialize" in s for s in steps)
    for path in (kind_dir / "kind-config.yaml", kind_dir / "openbao-values.yaml"):
        assert path.exists(), path


def test_up_on_eks_installs_both_charts_in_the_stacks_context(tmp_path: Path) -> None:
    stack_file = REPO / "environments/eks/stack.yaml"
    stack = load_stack(stack_file)
    kube = stack.kube.model_copy(update={"context": "prod", "image": "123.dkr.ecr/vaultdr:0.1.0"})  # type: ignore[union-attr]
    env = EksEnvironment(
        tmp_path / "state", stack.model_copy(update={"kube": kube}), stack_file=str(stack_file)
    )
    commands = [s.argv for s in deploy.plan_up(env) if s.argv]
    eks_dir = REPO / "environments/eks"
    assert [c[:5] for c in commands] == [
        ["helm", "repo", "add", "openbao", "https://openbao.github.io/openbao-helm"],
        ["helm", "upgrade", "--install", "openbao", "openbao/openbao"],
        [
            "helm",
            "upgrade",
            "--install",
            "vaultdr-ops",
            str(REPO / "environments/chart/vaultdr-ops"),
        ],
    ]
    assert str(eks_dir / "openbao-values.yaml") in commands[1]
    assert str(eks_dir / "ops-values.yaml") in commands[2]
    assert "image.repository=123.dkr.ecr/vaultdr,image.tag=0.1.0" in commands[2]
    assert all(c[-2:] == ["--kube-context", "prod"] for c in commands[1:])


def test_down_on_kind_deletes_the_cluster_only_if_up_created_it(tmp_path: Path) -> None:
    env = KindEnvironment(tmp_path / "state", kube_stack())
    assert [s.argv for s in deploy.plan_down(env)][:2] == [
        deploy.helm_uninstall(env, "vaultdr-ops"),
        deploy.helm_uninstall(env, "openbao"),
    ]
    deploy.update_record(env, created_cluster=True)
    assert [s.argv for s in deploy.plan_down(env)] == [
        ["kind", "delete", "cluster", "--name", "vaultdr"]
    ]


def test_the_kube_stack_files_load(tmp_path: Path) -> None:
    for name in ("kind", "eks"):
        stack = load_stack(REPO / f"environments/{name}/stack.yaml")
        assert stack.kube is not None
        assert stack.kube.namespace == "vaultdr"


# --- the agents in the cluster ----------------------------------------------------------------------
def pod_target(tmp_path: Path, kube_api: FakeKubeApi) -> PodRestoreTarget:
    """The restore watcher as in its pod: every request carries the vaultdr-restore service
    account's token and is checked against the Role the ops chart renders."""
    install_ops_rbac(kube_api.cluster)
    pod = PodSettings.from_environ(
        {
            "VAULTDR_VAULT_ADDR": "https://openbao-active.vaultdr.svc:8200",
            "VAULTDR_NODE_ADDRS": ",".join(
                f"https://openbao-{i}.openbao-internal:8200" for i in range(3)
            ),
            "VAULTDR_STATEFULSET": "openbao",
            "VAULTDR_NAMESPACE": NS,
            "VAULTDR_STATE_DIR": str(tmp_path / "agent"),
        }
    )
    api = agent_api(kube_api, "vaultdr-restore", tmp_path / "agent-kubeconfig")
    return PodRestoreTarget(pod, kube_stack(), api, Aws(AwsTarget("us-east-1")))


def test_the_restore_agent_holds_nodes_by_scaling_to_ordinal_zero_and_back(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    target = pod_target(tmp_path, kube_api)
    assert target.node_names() == ["openbao-0", "openbao-1", "openbao-2"]

    for name in ("openbao-1", "openbao-2"):
        target.hold_node(name)
    assert cluster.get("pods", NS, "openbao-1") is None
    assert cluster.get("pods", NS, "openbao-0") is not None
    for name in ("openbao-1", "openbao-2"):
        target.release_node(name)

    scales = [r.body for r in cluster.requests if r.method == "PATCH"]
    assert scales == [{"spec": {"replicas": 1}}] * 2 + [{"spec": {"replicas": 3}}] * 2
    assert cluster.get("pods", NS, "openbao-2") is not None


def test_the_restore_agent_restarts_ordinal_zero_by_deleting_its_pod(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    target = pod_target(tmp_path, kube_api)
    old = cluster.uid("pods", "openbao-0")

    target.hold_node("openbao-0")  # returns once the old pod is gone, not while it terminates
    assert cluster.uid("pods", "openbao-0") not in ("", old)
    target.release_node("openbao-0")

    assert cluster.mutations() == [("DELETE", f"{POD}/openbao-0")]
    assert "gracePeriodSeconds" not in delete_query(cluster, f"{POD}/openbao-0")


def test_the_restore_agent_wipes_a_node_pvc_first(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    target = pod_target(tmp_path, kube_api)

    old_claim = cluster.uid("persistentvolumeclaims", "data-openbao-0")

    target.wipe_node("openbao-0")

    assert cluster.mutations() == [
        ("DELETE", f"{PVC}/data-openbao-0"),
        ("DELETE", f"{POD}/openbao-0"),
    ]
    assert cluster.uid("persistentvolumeclaims", "data-openbao-0") not in ("", old_claim)


def test_an_agent_outside_the_ops_chart_names_the_missing_settings() -> None:
    with pytest.raises(ConfigError) as err:
        PodSettings.from_environ({"VAULTDR_STATEFULSET": "openbao"})
    assert "VAULTDR_VAULT_ADDR, VAULTDR_NODE_ADDRS" in err.value.message


# --- the CLI ---------------------------------------------------------------------------------------------
def run_cli(tmp_path: Path, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "VAULTDR_I_KNOW_THIS_BREAKS"}
    environ["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [sys.executable, "-m", "vaultdr.cli", *args, "--state-dir", str(tmp_path / "cli-state")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environ,
        timeout=60,
        check=False,
    )


def test_fault_inject_dry_run_on_kind_prints_the_changes_and_makes_none(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    result = run_cli(
        tmp_path,
        kubeconfig,
        "fault",
        "inject",
        "delete-volume",
        "openbao-2",
        "--env",
        "kind",
        "--dry-run",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"would delete pvc {NS}/data-openbao-2",
        f"would delete pod {NS}/openbao-2 ({GRACEFUL})",
        "dry run: nothing was changed",
    ]
    assert cluster.mutations() == []


def test_fault_inject_on_eks_is_refused_with_what_to_add(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", EKS_CONTEXT)
    result = run_cli(tmp_path, kubeconfig, "fault", "inject", "kill-node", "1", "--env", "eks")

    assert result.returncode == DestructiveFaultRefused.exit_code
    assert f'{ALLOW_ANNOTATION}="true"' in result.stderr
    assert f"--i-know-this-breaks {EKS_CONTEXT}" in result.stderr
    assert cluster.mutations() == []

    annotate(cluster)
    result = run_cli(
        tmp_path, kubeconfig, "fault", "inject", "kill-node", "1", "--env", "eks",
        "--i-know-this-breaks", EKS_CONTEXT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert cluster.mutations() == [("DELETE", f"{POD}/openbao-1")]


def test_drill_dry_run_on_kind_lists_each_scenarios_changes_and_makes_none(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    result = run_cli(
        tmp_path,
        kubeconfig,
        "drill",
        "--env",
        "kind",
        "--dry-run",
        "--tags",
        "total-loss or leader-loss",
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("kind create cluster --name vaultdr") for line in lines)
    assert "  When every volume is deleted: fault delete-all-volumes" in lines
    first_pod = lines.index(f"    delete pod {NS}/openbao-0 ({GRACEFUL})")
    assert lines[first_pod - 3 : first_pod] == [
        f"    delete pvc {NS}/data-openbao-{i}" for i in range(3)
    ]
    assert f"    delete pod {NS}/<leader> ({GRACEFUL})" in lines
    assert "Lost volume" not in result.stdout  # not selected by the tags
    assert lines[-1] == "dry run: nothing was changed"
    assert cluster.mutations() == []


def test_up_dry_run_on_kind_prints_the_steps_without_any_tool(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaultdr.cli",
            "up",
            "--env",
            "kind",
            "--dry-run",
            "--state-dir",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PATH": str(empty)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "kind load docker-image vaultdr-agent:" in result.stdout
    assert "helm upgrade --install openbao openbao/openbao --version 0.27.0" in result.stdout
    assert not (tmp_path / "s" / "ca").exists()


def test_status_reads_the_pods_and_asks_each_running_node(
    kind_env: Any, cluster: FakeCluster
) -> None:
    pod = cluster.get("pods", NS, "openbao-2")
    assert pod is not None
    pod["status"]["phase"] = "Pending"  # scheduled, its container not started

    status = kind_env.status(quick=True)

    assert [n.name for n in status.nodes] == ["openbao-0", "openbao-1", "openbao-2"]
    assert [n.running for n in status.nodes] == [True, True, False]
    assert status.nodes[2].error == "pod not running"
    assert status.extras["context"] == "kind-vaultdr"
    assert not status.healthy
    assert cluster.mutations() == []


def test_down_on_eks_needs_the_same_confirmation_and_deletes_only_what_up_made(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    vault_nodes: FakeVaultNodes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VAULTDR_I_KNOW_THIS_BREAKS", raising=False)
    env = eks_env(tmp_path, kube_api, vault_nodes)
    plan = [s.show() for s in deploy.plan_down(env)]
    assert plan[:2] == [
        "helm uninstall vaultdr-ops --namespace vaultdr --ignore-not-found",
        "helm uninstall openbao --namespace vaultdr --ignore-not-found",
    ]
    assert plan[2:] == [f"delete pvc {NS}/data-openbao-{i}" for i in range(3)]
    assert [s.show() for s in deploy.plan_down(env, keep_data=True)] == plan[:2]

    monkeypatch.setenv("PATH", str(tmp_path))  # refused before any tool is looked for
    with pytest.raises(DestructiveFaultRefused, match="refusing down on eks"):
        env.down()
    annotate(cluster)
    confirmed = eks_env(tmp_path, kube_api, vault_nodes, confirm_context=EKS_CONTEXT)
    with pytest.raises(EnvironmentStartError, match="missing on PATH: helm"):
        confirmed.down()
    assert cluster.mutations() == []


def test_down_on_eks_unconfirmed_is_refused_with_a_flag_that_down_accepts(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    annotate(cluster)  # the opt-in is there: only the confirmation is missing
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", EKS_CONTEXT)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no helm: nothing can be uninstalled, whatever happens

    refused = run_cli(tmp_path, kubeconfig, "down", "--env", "eks")

    assert refused.returncode == DestructiveFaultRefused.exit_code == EXIT_REFUSED, refused.stderr
    assert "refusing down on eks" in refused.stderr
    suggested = re.search(r"(--[a-z][a-z-]*) " + re.escape(EKS_CONTEXT), refused.stderr)
    assert suggested, refused.stderr
    flag = suggested.group(1)
    assert flag == CONFIRM_FLAG
    plan = run_cli(tmp_path, kubeconfig, "kube", "plan", "down", "--env", "eks")
    assert plan.returncode == 0, plan.stderr
    assert f"{flag} CONTEXT" in plan.stderr  # the plan names the same flag
    # `down` must accept the flag its refusal asks for (cli.py: `_add_confirmation(down)`)
    usage = run_cli(tmp_path, kubeconfig, "down", "--help")
    assert usage.returncode == 0, usage.stderr
    assert flag in usage.stdout, f"`vaultdr down` does not accept {flag}:\n{usage.stdout}"
    confirmed = run_cli(tmp_path, kubeconfig, "down", "--env", "eks", flag, EKS_CONTEXT)
    assert confirmed.returncode == EXIT_TOOL_MISSING, confirmed.stderr  # past the interlock
    assert "missing on PATH: helm" in confirmed.stderr
    assert cluster.mutations() == []


# --- port-forwarding ---------------------------------------------------------------------------------------
def test_the_nodes_api_is_reached_over_a_port_forward_with_tls(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    import ssl

    from vaultdr.envs.tls import LocalCA

    state = tmp_path / "state"
    ca = LocalCA(state / "ca")  # where `up` keeps the CA of the nodes' certificates
    pair = ca.issue_server_cert("openbao", tmp_path / "tls", hosts=deploy.node_hosts(kind_like()))
    nodes = FakeVaultNodes(["openbao-1"], leader="openbao-1")
    server = nodes.servers["openbao-1"]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    # The handshake in each connection's own thread, as a real server does it (not in accept()).
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    cluster.forward_to["openbao-1"] = ("127.0.0.1", int(server.server_address[1]))
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    env = KindEnvironment(state, kube_stack(), kubeconfig=str(kubeconfig))
    try:
        client = env.client("openbao-1")
        assert client.address.startswith("https://127.0.0.1:")
        assert client.read_leader()["is_self"] is True
        assert env.client("openbao-1").read_leader()["is_self"] is True  # a second stream
    finally:
        env.close()
        nodes.stop()
    forwards = [r for r in cluster.requests if r.path.endswith("/portforward")]
    assert [r.path for r in forwards] == [f"{POD}/openbao-1/portforward"] * len(forwards)
    assert forwards and all(r.query["ports"] == ["8200"] for r in forwards)
    assert cluster.mutations() == []


def kind_like() -> KubeEnvironment:
    return KindEnvironment(Path("/nonexistent"), kube_stack())


# --- the Chaos Toolkit total-loss probe on a cluster ----------------------------------------------
def test_the_total_loss_probe_reads_the_restore_record_through_the_kube_environment(
    tmp_path: Path, cluster: FakeCluster, kind_env: Any, vault_nodes: FakeVaultNodes
) -> None:
    """On kind/eks the in-cluster watcher records its restore on the StatefulSet (there is
    no local agents/restore.json): writes acknowledged after the restored snapshot was
    taken are the RPO, not lost writes."""
    started = dt.datetime.now(dt.UTC)
    current = session.Drill(
        env=kind_env,
        results_dir=tmp_path / "results",
        started_at=started.isoformat(timespec="milliseconds"),
        token="not-a-real-token",
    )
    current.ledger = WriteLedger(kind_env, current.token, rate=20.0)
    current.ledger.start()
    assert current.ledger.wait_acknowledged(10)
    # The writes end before the loss: a write acknowledged after the restore record's
    # start would be neither lost nor RPO, and the counts below would race the writer.
    current.ledger.stop()
    vault_nodes.lose_data()  # total loss, restored from a snapshot taken before the writes
    snapshot_key = f"snapshots/cid/{snap.format_stamp(started - dt.timedelta(seconds=30))}.snap"
    record = {
        "snapshot_key": snapshot_key,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }
    sts = cluster.get("statefulsets", NS, "openbao")
    assert sts is not None
    sts["metadata"].setdefault("annotations", {})[RESTORE_ANNOTATION] = json.dumps(record)
    assert not (kind_env.state_dir / "agents" / "restore.json").exists()

    configuration = {"vaultdr_state_dir": str(kind_env.state_dir)}
    with session._LOCK:
        session._DRILLS[kind_env.state_dir] = current
    try:
        answer = probes.no_acknowledged_write_lost(configuration)
    finally:
        with session._LOCK:
            session._DRILLS.pop(kind_env.state_dir, None)

    ledger = answer["ledger"]
    assert ledger["lost"] == [], "post-snapshot writes were counted as lost"
    assert ledger["rpo_writes"] == ledger["acknowledged"] >= 10
    assert ledger["snapshot_taken_at"] is not None
    assert answer["ok"] is True
