"""The official OpenBao chart's objects (openbao-helm, chart 0.27.0) built from its values.

The chart itself cannot be rendered here: ``helm install openbao/openbao`` pulls it from
its repository, and the tests have no network. So the objects ``helm install`` would
create for the values vaultdr uses are built here, each field taken from the chart's
templates at tag ``openbao-0.27.0`` (file named at each builder): the StatefulSet
(replicas, ``updateStrategy: OnDelete``, the pod management policy, the termination
grace, the preStop hook, the pod labels, the service account, the env of the start
script, the volumes and the claim template), the config ConfigMap, the four Services,
the service account, the auth-delegator ClusterRoleBinding and the service-discovery
Role/RoleBinding. Not built: the PodDisruptionBudget (the fake API has no policy/v1),
the injector and the UI (disabled in the values).
"""

from __future__ import annotations

import copy
from typing import Any

from vaultdr.envs.kube.deploy import official_fullname

#: The chart's own defaults (charts/openbao/values.yaml) for the keys used below.
DEFAULTS: dict[str, Any] = {
    "global": {"tlsDisable": True},
    "server": {
        "image": {"registry": "quay.io", "repository": "openbao/openbao", "tag": "2.4.1"},
        "updateStrategyType": "OnDelete",
        "podManagementPolicy": "OrderedReady",
        "terminationGracePeriodSeconds": 10,
        "preStopSleepSeconds": 5,
        "dataStorage": {
            "enabled": True,
            "size": "10Gi",
            "mountPath": "/openbao/data",
            "accessMode": "ReadWriteOnce",
        },
        "extraVolumes": [],
        "extraEnvironmentVars": {},
        "extraSecretEnvironmentVars": [],
        "authDelegator": {"enabled": True},
        "serviceAccount": {"create": True, "name": "", "serviceDiscovery": {"enabled": True}},
        "ha": {"enabled": False, "replicas": 3, "apiAddr": None, "raft": {"enabled": False}},
    },
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's values coalescing: maps merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def objects(values: dict[str, Any], *, release: str, namespace: str) -> list[dict[str, Any]]:
    """Everything ``helm install RELEASE openbao/openbao`` creates for ``values``, in order."""
    v = merge(DEFAULTS, values)
    server = v["server"]
    name = official_fullname(
        release,
        "openbao",
        fullname_override=str(v.get("fullnameOverride") or ""),
        name_override=str(v.get("nameOverride") or ""),
    )
    scheme = "http" if v["global"].get("tlsDisable") else "https"
    chart_labels = {
        "helm.sh/chart": "openbao-0.27.0",
        "app.kubernetes.io/name": "openbao",
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/managed-by": "Helm",
    }
    selector = {
        "app.kubernetes.io/name": "openbao",
        "app.kubernetes.io/instance": release,
        "component": "server",
    }
    account = server["serviceAccount"]["name"] or name
    out: list[dict[str, Any]] = []
    if server["serviceAccount"]["create"]:  # templates/server-serviceaccount.yaml
        out.append(_obj("v1", "ServiceAccount", account, namespace, chart_labels))
    if server["authDelegator"]["enabled"]:  # templates/server-clusterrolebinding.yaml
        binding = _obj(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            f"{name}-server-binding",
            None,
            chart_labels,
        )
        binding["roleRef"] = {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:auth-delegator",
        }
        binding["subjects"] = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
        out.append(binding)
    if server["serviceAccount"]["serviceDiscovery"]["enabled"] and server["ha"]["enabled"]:
        # templates/server-discovery-role.yaml, server-discovery-rolebinding.yaml
        role = _obj(
            "rbac.authorization.k8s.io/v1",
            "Role",
            f"{name}-discovery-role",
            namespace,
            chart_labels,
        )
        role["rules"] = [
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "verbs": ["get", "watch", "list", "update", "patch"],
            }
        ]
        out.append(role)
        rb = _obj(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            f"{name}-discovery-rolebinding",
            namespace,
            chart_labels,
        )
        rb["roleRef"] = {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": f"{name}-discovery-role",
        }
        rb["subjects"] = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
        out.append(rb)
    config = server["ha"]["raft"].get("config") if server["ha"]["raft"]["enabled"] else None
    if config:  # templates/server-config-configmap.yaml (openbao.config: the raft config)
        cm = _obj("v1", "ConfigMap", f"{name}-config", namespace, chart_labels)
        cm["data"] = {"extraconfig-from-values.hcl": str(config).strip() + "\n"}
        out.append(cm)
    ports = [
        {"name": scheme, "port": 8200, "targetPort": 8200},
        {"name": "https-internal", "port": 8201, "targetPort": 8201},
    ]
    # templates/server-service.yaml, server-ha-active-service.yaml, server-ha-standby-service.yaml,
    # server-headless-service.yaml
    for suffix, extra, headless in (
        ("", {}, False),
        ("-active", {"openbao-active": "true"}, False),
        ("-standby", {"openbao-active": "false"}, False),
        ("-internal", {}, True),
    ):
        svc = _obj("v1", "Service", f"{name}{suffix}", namespace, chart_labels)
        svc["spec"] = {
            "selector": {**selector, **extra},
            "ports": copy.deepcopy(ports),
            "publishNotReadyAddresses": True,
        }
        if headless:
            svc["spec"]["clusterIP"] = "None"
        out.append(svc)
    out.append(
        _statefulset(
            v, name=name, release=release, namespace=namespace, account=account, scheme=scheme
        )
    )
    return out


def _statefulset(
    v: dict[str, Any], *, name: str, release: str, namespace: str, account: str, scheme: str
) -> dict[str, Any]:
    """templates/server-statefulset.yaml (with _helpers.tpl openbao.args, openbao.volumes,
    openbao.mounts, openbao.volumeclaims, openbao.extraSecretEnvironmentVars)."""
    server = v["server"]
    image = server["image"]
    env: list[dict[str, Any]] = [
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "BAO_K8S_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "BAO_K8S_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "BAO_ADDR", "value": f"{scheme}://127.0.0.1:8200"},
        {
            "name": "BAO_API_ADDR",
            "value": server["ha"].get("apiAddr") or f"{scheme}://$(POD_IP):8200",
        },
        {"name": "SKIP_CHOWN", "value": "true"},
        {"name": "SKIP_SETCAP", "value": "true"},
        {"name": "HOSTNAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "BAO_CLUSTER_ADDR", "value": f"https://$(HOSTNAME).{name}-internal:8201"},
    ]
    if server["ha"]["raft"].get("enabled") and server["ha"]["raft"].get("setNodeId"):
        env.append(
            {"name": "BAO_RAFT_NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        )
    env.append({"name": "HOME", "value": "/home/openbao"})
    for item in server["extraSecretEnvironmentVars"]:
        env.append(
            {
                "name": item["envName"],
                "valueFrom": {
                    "secretKeyRef": {"name": item["secretName"], "key": item["secretKey"]}
                },
            }
        )
    for key, value in (server["extraEnvironmentVars"] or {}).items():
        env.append({"name": str(key), "value": str(value)})
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": f"{name}-config"}}]
    mounts: list[dict[str, Any]] = []
    storage = server["dataStorage"]
    if storage["enabled"]:
        mounts.append({"name": "data", "mountPath": storage["mountPath"]})
    mounts.append({"name": "config", "mountPath": "/openbao/config"})
    for extra in server["extraVolumes"]:
        ref_key = "secretName" if extra["type"] == "secret" else "name"
        volumes.append(
            {
                "name": f"userconfig-{extra['name']}",
                extra["type"]: {
                    ref_key: extra["name"],
                    "defaultMode": extra.get("defaultMode", 420),
                },
            }
        )
        mounts.append(
            {
                "name": f"userconfig-{extra['name']}",
                "readOnly": True,
                "mountPath": f"{extra.get('path') or '/openbao/userconfig'}/{extra['name']}",
            }
        )
    volumes.append({"name": "home", "emptyDir": {}})
    mounts.append({"name": "home", "mountPath": "/home/openbao"})
    selector = {
        "app.kubernetes.io/name": "openbao",
        "app.kubernetes.io/instance": release,
        "component": "server",
    }
    script = (
        "cp /openbao/config/extraconfig-from-values.hcl /tmp/storageconfig.hcl;\n"
        '[ -n "${HOST_IP}" ] && sed -Ei "s|HOST_IP|${HOST_IP?}|g" /tmp/storageconfig.hcl;\n'
        '[ -n "${POD_IP}" ] && sed -Ei "s|POD_IP|${POD_IP?}|g" /tmp/storageconfig.hcl;\n'
        '[ -n "${HOSTNAME}" ] && sed -Ei "s|HOSTNAME|${HOSTNAME?}|g" /tmp/storageconfig.hcl;\n'
        "/usr/local/bin/docker-entrypoint.sh bao server -config=/tmp/storageconfig.hcl \n"
    )
    sts = _obj(
        "apps/v1",
        "StatefulSet",
        name,
        namespace,
        {
            "app.kubernetes.io/name": "openbao",
            "app.kubernetes.io/instance": release,
            "app.kubernetes.io/managed-by": "Helm",
        },
    )
    sts["spec"] = {
        "serviceName": f"{name}-internal",
        "podManagementPolicy": server["podManagementPolicy"],
        "replicas": int(server["ha"]["replicas"]) if server["ha"]["enabled"] else 1,
        "updateStrategy": {"type": server["updateStrategyType"]},
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {"labels": {"helm.sh/chart": "openbao-0.27.0", **selector}},
            "spec": {
                "terminationGracePeriodSeconds": int(server["terminationGracePeriodSeconds"]),
                "serviceAccountName": account,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsGroup": 1000,
                    "runAsUser": 100,
                    "fsGroup": 1000,
                },
                "volumes": volumes,
                "containers": [
                    {
                        "name": "openbao",
                        "image": f"{image['registry'] or 'docker.io'}/{image['repository']}:{image['tag']}",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/sh", "-ec"],
                        "args": [script],
                        "env": env,
                        "volumeMounts": mounts,
                        "ports": [
                            {"containerPort": 8200, "name": scheme},
                            {"containerPort": 8201, "name": "https-internal"},
                            {"containerPort": 8202, "name": f"{scheme}-rep"},
                        ],
                        "lifecycle": {
                            "preStop": {
                                "exec": {
                                    "command": [
                                        "/bin/sh",
                                        "-c",
                                        f"sleep {server['preStopSleepSeconds']} && kill -SIGTERM $(pidof bao)",
                                    ]
                                }
                            }
                        },
                    }
                ],
            },
        },
        "volumeClaimTemplates": [
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": [storage["accessMode"]],
                    "resources": {"requests": {"storage": storage["size"]}},
                },
            }
        ]
        if storage["enabled"]
        else [],
    }
    sts["status"] = {"replicas": 0}
    return sts


def _obj(
    api_version: str, kind: str, name: str, namespace: str | None, labels: dict[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta}
