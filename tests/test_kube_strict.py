"""The fake Kubernetes API refuses what a real API server refuses, and vaultdr copes.

Each test drives the official client (through :class:`~vaultdr.envs.kube.api.KubeApi`)
against tests/fake_kube.py over HTTP: TokenRequest for an account or namespace that
does not exist, namespace lifecycle, graceful pod deletion and the StatefulSet and
pvc-protection controllers, and RBAC from the ops chart's rendered Role. Then `up`'s
namespace/service-account step, with and without which a kubernetes-auth token
request works or gets the real 404.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_kube import PVC_PROTECTION, FakeCluster, FakeKubeApi
from tests.kube_rbac import agent_api, install_ops_rbac, ops_rbac
from vaultdr import faults
from vaultdr.config import load_stack
from vaultdr.envs.kube import deploy
from vaultdr.envs.kube.api import KubeApi
from vaultdr.envs.kube.clusters import KindEnvironment
from vaultdr.errors import KubeApiError, StackStateError

REPO = Path(__file__).resolve().parent.parent
NS = "vaultdr"


@pytest.fixture
def admin(kube_api: FakeKubeApi, tmp_path: Path) -> Iterator[KubeApi]:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    api = KubeApi.from_kubeconfig(kubeconfig=str(kubeconfig))
    yield api
    api.close()


def refusal(call: Any) -> str:
    with pytest.raises(KubeApiError) as err:
        call()
    return err.value.message


def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# --- TokenRequest ---------------------------------------------------------------------------------
def test_a_token_for_a_service_account_that_does_not_exist_is_a_404(
    admin: KubeApi, cluster: FakeCluster
) -> None:
    message = refusal(
        lambda: admin.request_token(NS, "nobody", audiences=["vault"], ttl_seconds=600)
    )
    assert "404" in message
    message = refusal(
        lambda: admin.request_token("apps", "web", audiences=["vault"], ttl_seconds=600)
    )
    assert "404" in message  # no namespace apps either
    assert cluster.tokens == {}


def test_a_token_shorter_than_ten_minutes_is_invalid(admin: KubeApi, cluster: FakeCluster) -> None:
    assert "422" in refusal(
        lambda: admin.request_token(NS, "web", audiences=["vault"], ttl_seconds=599)
    )
    assert admin.request_token(NS, "web", audiences=["vault"], ttl_seconds=600)
    answer = cluster.requests[-1]
    assert answer.body["spec"] == {"audiences": ["vault"], "expirationSeconds": 600}


def test_a_token_stops_working_when_its_service_account_is_deleted(
    kube_api: FakeKubeApi, cluster: FakeCluster, admin: KubeApi, tmp_path: Path
) -> None:
    install_ops_rbac(cluster)
    agent = agent_api(kube_api, "vaultdr-restore", tmp_path / "agent")
    assert agent.read_pod(NS, "openbao-0") is not None
    admin.delete_service_account(NS, "vaultdr-restore")
    assert "401" in refusal(lambda: agent.read_pod(NS, "openbao-0"))


# --- namespaces and service accounts ------------------------------------------------------------
def test_namespaces_and_service_accounts_are_created_listed_and_deleted(
    admin: KubeApi, cluster: FakeCluster
) -> None:
    assert admin.read_namespace("apps") is None
    assert "404" in refusal(lambda: admin.create_service_account("apps", "web", labels={}))

    admin.create_namespace("apps", labels={"a": "b"}, annotations={"vaultdr.io/owner": "x"})
    assert "409" in refusal(lambda: admin.create_namespace("apps", labels={}, annotations={}))
    admin.create_service_account("apps", "web", labels={})
    assert "409" in refusal(lambda: admin.create_service_account("apps", "web", labels={}))
    assert admin.service_account_exists("apps", "web")
    assert admin.request_token("apps", "web", audiences=["vault"], ttl_seconds=600)
    info = admin.read_namespace("apps")
    assert (
        info is not None
        and info.phase == "Active"
        and info.annotations == {"vaultdr.io/owner": "x"}
    )

    admin.delete_namespace("apps")
    terminating = admin.read_namespace("apps")
    assert terminating is not None and terminating.phase == "Terminating"
    assert "403" in refusal(lambda: admin.create_service_account("apps", "batch", labels={}))
    assert wait_until(lambda: admin.read_namespace("apps") is None)
    assert cluster.get("serviceaccounts", "apps", "web") is None  # emptied with it


# --- graceful deletion and the controllers -----------------------------------------------------------
def test_a_deleted_pod_keeps_running_for_its_grace_then_the_statefulset_recreates_it(
    admin: KubeApi, cluster: FakeCluster
) -> None:
    events: list[tuple[str, ...]] = []
    cluster.on_pod_stopping = lambda ns, name, grace: events.append(("stopping", name, str(grace)))
    cluster.on_pod_gone = lambda ns, name: events.append(("gone", name))
    cluster.on_pod_started = lambda ns, name, pod: events.append(("started", name))
    old = cluster.uid("pods", "openbao-1")

    admin.delete_pod(NS, "openbao-1")

    pod = admin.read_pod(NS, "openbao-1")
    assert pod is not None and pod.uid == old and pod.deleting  # its container still runs
    assert events == [("stopping", "openbao-1", "1")]
    cluster.container_exited(NS, "openbao-1")
    new = admin.read_pod(NS, "openbao-1")
    assert new is not None and new.uid != old and not new.deleting
    assert events == [
        ("stopping", "openbao-1", "1"),
        ("gone", "openbao-1"),
        ("started", "openbao-1"),
    ]


def test_a_pod_deleted_without_grace_uses_the_pods_own_and_a_force_delete_none(
    admin: KubeApi, cluster: FakeCluster
) -> None:
    cluster.termination_grace = 30
    cluster.put("pods", NS, "openbao-2", cluster.pod(2))
    admin.delete_pod(NS, "openbao-2")
    pod = cluster.get("pods", NS, "openbao-2")
    assert pod is not None and pod["metadata"]["deletionGracePeriodSeconds"] == 30
    time.sleep(0.3)
    assert cluster.get("pods", NS, "openbao-2")["metadata"]["uid"] == pod["metadata"]["uid"]  # type: ignore[index]

    admin.delete_pod(NS, "openbao-2", grace_seconds=0)  # force: gone at once, replaced at once
    replaced = cluster.get("pods", NS, "openbao-2")
    assert replaced is not None and replaced["metadata"]["uid"] != pod["metadata"]["uid"]


def test_a_deleted_pvc_stays_terminating_until_its_pod_is_gone(
    admin: KubeApi, cluster: FakeCluster
) -> None:
    cluster.termination_grace = 5
    cluster.put("pods", NS, "openbao-1", cluster.pod(1))
    old = admin.read_pvc(NS, "data-openbao-1")
    assert old is not None and PVC_PROTECTION in old.finalizers

    admin.delete_pvc(NS, "data-openbao-1")
    admin.delete_pod(NS, "openbao-1")
    time.sleep(0.3)
    held = admin.read_pvc(NS, "data-openbao-1")
    assert held is not None and held.uid == old.uid and held.deleting  # the pod still terminates

    cluster.advance(5)
    fresh = admin.read_pvc(NS, "data-openbao-1")
    assert fresh is not None and fresh.uid != old.uid and not fresh.deleting
    assert cluster.controller_log[-2:] == [
        "create Claim data-openbao-1 in StatefulSet openbao",
        "create Pod openbao-1 in StatefulSet openbao",
    ]


def test_the_statefulset_does_not_start_a_pod_while_its_claim_is_terminating(
    admin: KubeApi, cluster: FakeCluster
) -> None:
    pvc = cluster.get("persistentvolumeclaims", NS, "data-openbao-2")
    assert pvc is not None
    pvc["metadata"]["finalizers"].append("example.com/backup")  # another controller holds it

    admin.delete_pvc(NS, "data-openbao-2")
    admin.delete_pod(NS, "openbao-2")
    cluster.advance(1)

    assert admin.read_pod(NS, "openbao-2") is None  # waits: its claim is being deleted
    assert any("pvc data-openbao-2 is being deleted" in line for line in cluster.controller_log)
    cluster.remove_finalizer("persistentvolumeclaims", NS, "data-openbao-2", "example.com/backup")
    pod = admin.read_pod(NS, "openbao-2")
    claim = admin.read_pvc(NS, "data-openbao-2")
    assert pod is not None and claim is not None and claim.uid != pvc["metadata"]["uid"]


def test_kill_node_is_graceful_and_force_delete_pod_is_not(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    env = KindEnvironment(tmp_path / "state", load_stack(REPO / "environments/kind/stack.yaml"),
                          kubeconfig=str(kubeconfig))  # fmt: skip
    cluster.termination_grace = 30
    for i in (1, 2):
        cluster.put("pods", NS, f"openbao-{i}", cluster.pod(i))

    faults.inject(env, "kill-node", ["openbao-1"])
    faults.inject(env, "force-delete-pod", ["openbao-2"])

    deletes = [r for r in cluster.requests if r.method == "DELETE"]
    assert [r.path.rsplit("/", 1)[-1] for r in deletes] == ["openbao-1", "openbao-2"]
    assert "gracePeriodSeconds" not in deletes[0].query
    assert deletes[1].query["gracePeriodSeconds"] == ["0"]
    assert cluster.get("pods", NS, "openbao-1")["metadata"]["deletionGracePeriodSeconds"] == 30  # type: ignore[index]
    assert not cluster.get("pods", NS, "openbao-2")["metadata"].get("deletionTimestamp")  # type: ignore[index]
    with env.recording() as planned:
        env.force_delete_node("openbao-0")
    assert planned == [f"delete pod {NS}/openbao-0 (gracePeriodSeconds=0: force)"]
    env.close()


# --- RBAC from the ops chart ------------------------------------------------------------------------------
def test_the_rendered_role_is_what_the_fake_enforces() -> None:
    objects = {(o["kind"], o["metadata"]["name"]) for o in ops_rbac()}
    assert objects == {
        ("ClusterRoleBinding", "vaultdr-vaultdr-ops-auth-delegator"),
        ("Role", "vaultdr-ops-restore"),
        ("RoleBinding", "vaultdr-ops-restore"),
    }


def test_a_request_outside_the_role_is_refused_with_the_real_message(
    kube_api: FakeKubeApi, cluster: FakeCluster, tmp_path: Path
) -> None:
    install_ops_rbac(cluster)
    restore = agent_api(kube_api, "vaultdr-restore", tmp_path / "restore")
    configure = agent_api(kube_api, "vaultdr-configure", tmp_path / "configure")

    assert "403" in refusal(lambda: restore.list_pods(NS, "app.kubernetes.io/instance=openbao"))
    assert "403" in refusal(lambda: restore.read_secret_data(NS, "openbao-tls"))
    assert "403" in refusal(lambda: configure.delete_pod(NS, "openbao-1"))
    assert "403" in refusal(
        lambda: restore.request_token(NS, "web", audiences=["v"], ttl_seconds=600)
    )
    forbidden = [r for r in cluster.requests if r.path.endswith("/pods/openbao-1")]
    assert forbidden and cluster.get("pods", NS, "openbao-1") is not None  # nothing deleted
    user = "system:serviceaccount:vaultdr:vaultdr-configure"
    with cluster.lock:
        token = cluster.mint_token(NS, "vaultdr-configure")
    status = kube_api_answer(kube_api, token, f"/api/v1/namespaces/{NS}/pods/openbao-1", "DELETE")
    assert status["code"] == 403 and status["reason"] == "Forbidden"
    assert status["message"] == (
        f'pods "openbao-1" is forbidden: User "{user}" cannot delete resource "pods" '
        f'in API group "" in the namespace "{NS}"'
    )
    status = kube_api_answer(
        kube_api, token, f"/apis/apps/v1/namespaces/{NS}/statefulsets/openbao/scale", "PATCH"
    )
    assert 'cannot patch resource "statefulsets/scale" in API group "apps"' in status["message"]
    assert status["message"].startswith('statefulsets.apps "openbao" is forbidden')


def kube_api_answer(kube_api: FakeKubeApi, token: str, path: str, method: str) -> dict[str, Any]:
    """The raw Status of one request sent with ``token``."""
    request = urllib.request.Request(
        kube_api.url + path,
        method=method,
        data=b"{}" if method != "GET" else None,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    answer: dict[str, Any] = json.loads(err.value.read())
    return answer


def test_an_unknown_token_is_unauthorized(kube_api: FakeKubeApi, tmp_path: Path) -> None:
    path = kube_api.write_kubeconfig(tmp_path / "kc", "x", token="not-a-token")
    api = KubeApi.from_kubeconfig(kubeconfig=str(path))
    assert "401" in refusal(lambda: api.read_pod(NS, "openbao-0"))


# --- up's namespace and service-account step -----------------------------------------------------------
def kind_env(tmp_path: Path, kube_api: FakeKubeApi) -> KindEnvironment:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    stack = load_stack(REPO / "environments/kind/stack.yaml")
    return KindEnvironment(tmp_path / "state", stack, kubeconfig=str(kubeconfig))


def service_account_step(env: KindEnvironment) -> deploy.Step:
    (step,) = [
        s
        for s in deploy.plan_up(env)
        if "service accounts stack.yaml declares outside" in s.description
    ]
    return step


def test_up_creates_the_declared_service_accounts_so_a_login_token_can_be_had(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    env = kind_env(tmp_path, kube_api)
    step = service_account_step(env)
    assert step.action is not None

    step.action()

    token = env.service_account_token("apps", "web", audiences=["vault"], ttl=600)
    assert token.startswith("eyJ")
    ns = cluster.get("namespaces", "", "apps")
    assert ns is not None and ns["metadata"]["annotations"] == {
        deploy.OWNER_ANNOTATION: "vaultdr-kind"
    }
    record = deploy.read_record(env)
    assert record["created_namespaces"] == ["apps"]
    assert record["created_service_accounts"] == ["apps/web", "apps/batch", "apps/intruder"]
    step.action()  # again: nothing more
    assert deploy.read_record(env) == record
    down = [s.show() for s in deploy.plan_down(env)]
    assert down[-1] == "delete namespace apps (created by up)"
    assert not any("service account" in line for line in down)  # they go with their namespace
    kept = [s.show() for s in deploy.plan_down(env, keep_data=True)]
    assert not any("delete namespace" in line for line in kept)  # a namespace takes its claims
    assert kept[-3:] == [
        f"delete service account apps/{name} (created by up)"
        for name in ("web", "batch", "intruder")
    ]
    env.close()


def test_down_leaves_a_namespace_it_created_once_something_else_runs_in_it(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deleting a namespace deletes everything in it: a team's pod deployed into `apps`
    after `up` keeps the namespace (and the pod) alive through `down`."""
    env = kind_env(tmp_path, kube_api)
    step = service_account_step(env)
    assert step.action is not None
    step.action()
    team_pod = cluster.pod(0)
    team_pod["metadata"].update(name="billing-0", namespace="apps", labels={"app": "billing"})
    team_pod["spec"]["volumes"] = []
    cluster.put("pods", "apps", "billing-0", team_pod)

    (delete_apps,) = [
        s for s in deploy.plan_down(env) if s.show() == "delete namespace apps (created by up)"
    ]
    assert delete_apps.action is not None
    delete_apps.action()

    assert ("DELETE", "/api/v1/namespaces/apps") not in cluster.mutations()
    assert cluster.get("pods", "apps", "billing-0") is not None
    assert "now holds pod billing-0: left as it is" in capsys.readouterr().err
    cluster.objects.pop(("pods", "apps", "billing-0"))
    delete_apps.action()  # once it is gone, the namespace goes
    assert ("DELETE", "/api/v1/namespaces/apps") in cluster.mutations()
    env.close()


def test_without_the_step_the_token_request_is_the_404_a_real_cluster_gives(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    env = kind_env(tmp_path, kube_api)
    with pytest.raises(KubeApiError) as err:
        env.service_account_token("apps", "web", audiences=["vault"], ttl=600)
    assert "404" in err.value.message
    env.close()


def test_up_creates_nothing_in_a_namespace_that_is_not_vaultdrs(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    cluster.add_namespace("apps")  # someone else's
    cluster.add_service_account("apps", "web")
    env = kind_env(tmp_path, kube_api)
    step = service_account_step(env)
    assert step.action is not None

    with pytest.raises(StackStateError) as err:
        step.action()

    assert "apps/batch, apps/intruder" in err.value.message
    assert err.value.exit_code == StackStateError.exit_code == 3
    assert [m for m in cluster.mutations()] == []
    assert deploy.read_record(env) == {}
    env.close()
