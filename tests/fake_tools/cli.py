"""Fake ``kind``, ``docker`` and ``helm`` for tests/test_kind_e2e.py (``tests/fake_tools/bin``).

They do what the real tools do to a cluster, on the fake API (tests/fake_kube.py), and
record every call in ``$VAULTDR_FAKE_TOOLS_DIR/calls.jsonl``:

* ``kind create cluster --name N``: writes the context ``kind-N`` (the fake API's URL,
  the admin token) into ``$KUBECONFIG`` as kind does; ``kind get clusters`` lists the
  created ones; ``kind load docker-image`` and ``docker build`` change nothing here (the
  "image" is this repository and the test's virtualenv); ``kind delete cluster`` removes
  the context and tells the fake kubelet to drop the nodes (a marker file it polls).
* ``helm upgrade --install`` of a local chart (the ops chart) renders it with the Helm
  template engine (helm-python-sdk, as tests/kube_rbac.py) and creates every object
  through the API with the kubeconfig's credentials, hooks after the rest (a
  ``post-install`` Job is waited for and, ``hook-succeeded``, deleted); ``--wait`` waits
  for every Deployment to be ready. Of ``openbao/openbao`` it creates the objects
  :mod:`tests.fake_tools.official_chart` builds from the values (the chart cannot be
  pulled here). ``helm repo add`` is recorded only.

Test-only: ``VAULTDR_FAKE_TOOLS_DIR`` (the control directory: ``api_url``) and
``VAULTDR_FAKE_TOOLS_PYTHON`` are read by these scripts alone, never by vaultdr.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.fake_tools.official_chart import merge
from tests.fake_tools.official_chart import objects as official_objects

ADMIN_TOKEN = "fake-admin-token"

PLURALS = {
    "ServiceAccount": ("api/v1", "serviceaccounts", True),
    "ConfigMap": ("api/v1", "configmaps", True),
    "Secret": ("api/v1", "secrets", True),
    "Service": ("api/v1", "services", True),
    "Deployment": ("apis/apps/v1", "deployments", True),
    "StatefulSet": ("apis/apps/v1", "statefulsets", True),
    "Job": ("apis/batch/v1", "jobs", True),
    "Role": ("apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": ("apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
}


def control() -> Path:
    return Path(os.environ["VAULTDR_FAKE_TOOLS_DIR"])


def record(tool: str, argv: list[str]) -> None:
    with open(control() / "calls.jsonl", "a") as f:
        f.write(json.dumps({"tool": tool, "argv": argv}) + "\n")


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def option(argv: list[str], name: str, default: str = "") -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def options(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name and i + 1 < len(argv)]


# --- kind ------------------------------------------------------------------------------------------
def clusters_file() -> Path:
    return control() / "clusters.json"


def clusters() -> list[str]:
    path = clusters_file()
    return list(json.loads(path.read_text())) if path.exists() else []


def kubeconfig_path() -> Path:
    return Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")


def kind(argv: list[str]) -> int:
    if argv[:2] == ["get", "clusters"]:
        names = clusters()
        if not names:
            print("No kind clusters found.", file=sys.stderr)
        for name in names:
            print(name)
        return 0
    name = option(argv, "--name", "kind")
    if argv[:2] == ["create", "cluster"]:
        if name in clusters():
            return fail(
                f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"'
            )
        clusters_file().write_text(json.dumps([*clusters(), name]))
        _write_context(f"kind-{name}", (control() / "api_url").read_text().strip())
        print(f'Creating cluster "{name}" ...', file=sys.stderr)
        return 0
    if argv[:2] == ["delete", "cluster"]:
        clusters_file().write_text(json.dumps([c for c in clusters() if c != name]))
        (control() / "cluster-deleted").write_text(name)
        _drop_context(f"kind-{name}")
        deadline = time.monotonic() + 60
        while (control() / "cluster-deleted").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f'Deleting cluster "{name}" ...', file=sys.stderr)
        return 0
    if argv[:2] == ["load", "docker-image"]:
        if name not in clusters():
            return fail(f'ERROR: no nodes found for cluster "{name}"')
        return 0
    if argv[:2] == ["export", "logs"]:
        return 0
    return fail(f"fake kind: {' '.join(argv)} is not modelled")


def _load_kubeconfig() -> dict[str, Any]:
    path = kubeconfig_path()
    if path.exists():
        return yaml.safe_load(path.read_text()) or {}
    return {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}


def _write_context(context: str, server: str) -> None:
    config = _load_kubeconfig()
    for key in ("clusters", "users", "contexts"):
        config[key] = [e for e in config.get(key) or [] if e["name"] != context]
    config["clusters"].append({"name": context, "cluster": {"server": server}})
    config["users"].append({"name": context, "user": {"token": ADMIN_TOKEN}})
    config["contexts"].append({"name": context, "context": {"cluster": context, "user": context}})
    config["current-context"] = context
    path = kubeconfig_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))


def _drop_context(context: str) -> None:
    config = _load_kubeconfig()
    for key in ("clusters", "users", "contexts"):
        config[key] = [e for e in config.get(key) or [] if e["name"] != context]
    if config.get("current-context") == context:
        config["current-context"] = ""
    kubeconfig_path().write_text(yaml.safe_dump(config))


# --- helm ------------------------------------------------------------------------------------------
class Api:
    """The kubeconfig's cluster and credentials (``--kube-context`` or the current one)."""

    def __init__(self, context: str) -> None:
        config = _load_kubeconfig()
        context = context or str(config.get("current-context") or "")
        entry = next((c for c in config.get("contexts") or [] if c["name"] == context), None)
        if entry is None:
            raise SystemExit(f"Error: kube context {context!r} not found")
        cluster = next(c for c in config["clusters"] if c["name"] == entry["context"]["cluster"])
        user = next(u for u in config["users"] if u["name"] == entry["context"]["user"])
        self.server = str(cluster["cluster"]["server"])
        self.token = str(user["user"]["token"])

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def path(self, obj: dict[str, Any], namespace: str, *, name: str = "") -> str:
        prefix, plural, namespaced = PLURALS[obj["kind"]]
        ns = obj["metadata"].get("namespace") or namespace
        base = f"/{prefix}/namespaces/{ns}/{plural}" if namespaced else f"/{prefix}/{plural}"
        return f"{base}/{name}" if name else base

    def create(self, obj: dict[str, Any], namespace: str) -> None:
        if obj["kind"] not in PLURALS:
            print(
                f"fake helm: {obj['kind']} {obj['metadata']['name']} not created (not modelled)",
                file=sys.stderr,
            )
            return
        if PLURALS[obj["kind"]][2]:
            obj["metadata"].setdefault("namespace", namespace)
        code, answer = self.request("POST", self.path(obj, namespace), obj)
        if code == 409:
            print(
                f"fake helm: {obj['kind']} {obj['metadata']['name']} exists, left as it is",
                file=sys.stderr,
            )
            return
        if code >= 300:
            raise SystemExit(
                f"Error: INSTALLATION FAILED: {obj['kind']} {obj['metadata']['name']}: "
                f"{(answer or {}).get('message', code)}"
            )

    def get(self, obj: dict[str, Any], namespace: str) -> dict[str, Any] | None:
        code, answer = self.request("GET", self.path(obj, namespace, name=obj["metadata"]["name"]))
        return answer if code == 200 else None


ORDER = [
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Deployment",
    "StatefulSet",
    "Job",
]


def _set_values(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in pairs:
        for pair in item.split(","):
            key, _, value = pair.partition("=")
            node = out
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    return out


def helm(argv: list[str]) -> int:
    if argv[:2] == ["repo", "add"]:
        return 0
    if argv[:2] != ["upgrade", "--install"]:
        return fail(f"fake helm: {' '.join(argv)} is not modelled")
    release, chart = argv[2], argv[3]
    namespace = option(argv, "--namespace", "default")
    values: dict[str, Any] = {}
    for path in options(argv, "--values"):
        values = merge(values, yaml.safe_load(Path(path).read_text()) or {})
    values = merge(values, _set_values(options(argv, "--set")))
    api = Api(option(argv, "--kube-context"))
    if Path(chart).is_dir():
        import helm_python

        with helm_python.Chart.load(Path(chart)) as loaded:
            manifests = loaded.render(values, name=release, namespace=namespace, is_install=True)
        rendered = [
            doc
            for path, text in sorted(manifests.items())
            if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text)
            if doc
        ]
    elif chart.endswith("/openbao"):
        rendered = official_objects(values, release=release, namespace=namespace)
    else:
        return fail(f"fake helm: chart {chart} is not modelled")
    hooks = [o for o in rendered if "helm.sh/hook" in ((o["metadata"].get("annotations")) or {})]
    plain = [o for o in rendered if o not in hooks]
    for obj in sorted(plain, key=lambda o: ORDER.index(o["kind"]) if o["kind"] in ORDER else 99):
        api.create(obj, namespace)
    timeout = float(option(argv, "--timeout", "300s").rstrip("s"))
    deadline = time.monotonic() + timeout
    if "--wait" in argv:
        for obj in plain:
            if obj["kind"] == "Deployment" and not _wait(
                api, obj, namespace, deadline, _deployment_ready
            ):
                return fail(
                    f"Error: INSTALLATION FAILED: context deadline exceeded ({obj['metadata']['name']} not ready)"
                )
    for (
        hook
    ) in hooks:  # post-install hooks: created after the rest, waited for (helm's hooks always are)
        api.create(hook, namespace)
        if hook["kind"] == "Job":
            if not _wait(api, hook, namespace, deadline, _job_done):
                return fail(
                    f"Error: INSTALLATION FAILED: post-install hook {hook['metadata']['name']} did not complete"
                )
            answer = api.get(hook, namespace) or {}
            conditions = {c["type"] for c in (answer.get("status") or {}).get("conditions") or []}
            if "Complete" not in conditions:
                return fail(
                    f"Error: INSTALLATION FAILED: failed post-install: job {hook['metadata']['name']} failed: BackoffLimitExceeded"
                )
            policy = hook["metadata"]["annotations"].get("helm.sh/hook-delete-policy", "")
            if "hook-succeeded" in policy:
                api.request("DELETE", api.path(hook, namespace, name=hook["metadata"]["name"]))
    print(f'Release "{release}" has been upgraded. Happy Helming!')
    return 0


def _deployment_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return int(status.get("readyReplicas") or 0) >= int(obj["spec"].get("replicas", 1))


def _job_done(obj: dict[str, Any]) -> bool:
    return bool((obj.get("status") or {}).get("conditions"))


def _wait(api: Api, obj: dict[str, Any], namespace: str, deadline: float, done: Any) -> bool:
    while time.monotonic() < deadline:
        found = api.get(obj, namespace)
        if found is not None and done(found):
            return True
        time.sleep(1.0)
    return False


# --- docker ----------------------------------------------------------------------------------------
def docker(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        return 0
    return fail(f"fake docker: {' '.join(argv)} is not modelled")


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    record(tool, argv)
    return {"kind": kind, "helm": helm, "docker": docker}[tool](argv)


if __name__ == "__main__":
    sys.exit(main())
