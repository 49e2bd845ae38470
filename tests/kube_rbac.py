"""The ops chart's RBAC, rendered, loaded into the fake API; and clients that act as an agent.

The chart is rendered by the Helm template engine itself (the ``helm-python-sdk``
package, the same one tests/test_chart.py uses), so no template expression can be
mis-rendered by a hand-written substitute: a changed ``templates/rbac.yaml`` is
what the fake enforces, and one Helm cannot render fails here.

:func:`install_ops_rbac` puts the Roles, RoleBindings, ClusterRoles and
ClusterRoleBindings of ``templates/rbac.yaml`` (and the ServiceAccounts of
``templates/serviceaccounts.yaml``) into a :class:`~tests.fake_kube.FakeCluster`;
:func:`agent_api` is a :class:`~vaultdr.envs.kube.api.KubeApi` that sends a
service account's token, as an agent's pod does with its mounted token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import yaml

from tests.fake_kube import FakeCluster, FakeKubeApi
from vaultdr.envs.kube.api import KubeApi

CHART = Path(__file__).resolve().parent.parent / "environments/chart/vaultdr-ops"
RELEASE = "vaultdr-ops"
RBAC_KINDS = frozenset({"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"})


def render_ops_chart(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = "vaultdr"
) -> dict[str, list[dict[str, Any]]]:
    """Every object the ops chart renders, by template file name (``rbac.yaml``, ...)."""
    with helm_python.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    rendered: dict[str, list[dict[str, Any]]] = {}
    for path, text in manifests.items():
        if path.endswith(".yaml"):
            docs = [doc for doc in yaml.safe_load_all(text) if doc]
            rendered[path.rsplit("/", 1)[-1]] = docs
    return rendered


def ops_rbac(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = "vaultdr"
) -> list[dict[str, Any]]:
    """The RBAC objects of the chart's templates/rbac.yaml, as Helm renders them."""
    objects = render_ops_chart(values, release=release, namespace=namespace).get("rbac.yaml", [])
    unknown = [o["kind"] for o in objects if o["kind"] not in RBAC_KINDS]
    assert not unknown, f"templates/rbac.yaml renders kinds the fake cannot enforce: {unknown}"
    return objects


def install_ops_rbac(
    cluster: FakeCluster, values: dict[str, Any] | None = None, *, release: str = RELEASE
) -> list[dict[str, Any]]:
    """Load the chart's RBAC and service accounts into ``cluster`` (as ``helm install`` would
    create them); the RBAC objects loaded."""
    rendered = render_ops_chart(values, release=release, namespace=cluster.namespace)
    for account in rendered.get("serviceaccounts.yaml", []):
        meta = account["metadata"]
        if cluster.get("serviceaccounts", meta["namespace"], meta["name"]) is None:
            cluster.add_service_account(meta["namespace"], meta["name"])
    objects = ops_rbac(values, release=release, namespace=cluster.namespace)
    with cluster.lock:
        for obj in objects:
            cluster.put_rbac(obj)
    return objects


def agent_api(
    kube_api: FakeKubeApi, service_account: str, kubeconfig: Path, *, namespace: str | None = None
) -> KubeApi:
    """A KubeApi whose every request carries ``service_account``'s token (an agent's pod)."""
    cluster = kube_api.cluster
    with cluster.lock:
        token = cluster.mint_token(namespace or cluster.namespace, service_account)
    path = kube_api.write_kubeconfig(kubeconfig, "in-cluster", token=token)
    return KubeApi.from_kubeconfig(kubeconfig=str(path))
