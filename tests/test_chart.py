"""What gets applied to a kind or EKS cluster, checked offline, in seconds.

The vaultdr-ops chart is rendered with the Helm SDK (no helm binary, no cluster) for
its defaults, the kind values and the EKS values (with Terraform's outputs filled in);
every object it renders, and every object of the kind AWS emulator, is validated
against the Kubernetes OpenAPI schemas in strict mode, so a misspelt or misplaced
field fails here rather than on a cluster. The tests then assert what the objects do:
who may do what, which addresses and credentials each agent gets, what runs as a hook.

The official charts' values files are checked against the keys those charts define
(tests/data/official-chart-values.yaml, recorded for the pinned chart versions) and for
what vaultdr relies on: 3 raft voters, performance_multiplier 1, TLS, the awskms seal,
Kubernetes service registration.

The emulator's bootstrap Job runs ``vaultdr agent aws-bootstrap``; its code runs here
against a real emulator process (IAM enforced, nothing spent before it, as in the pod),
writing its Secrets to the fake Kubernetes API over HTTP, and each principal it creates
is tried for what it may and may not do.

What this cannot show: that the images pull and start, that the official charts
render these values, that Vault unseals. Those need a cluster (docs/kubernetes.md).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

import vaultdr
from tests.fake_kube import FakeCluster, FakeKubeApi
from vaultdr.aws import Aws, AwsCredentials, AwsTarget
from vaultdr.cli import build_parser
from vaultdr.config import Kube, Stack, load_stack, parse_stack
from vaultdr.envs.kube import agents, aws_bootstrap, deploy, terraform
from vaultdr.envs.kube.api import KubeApi
from vaultdr.envs.local import awsemu, emulator
from vaultdr.envs.local.processes import free_port, stop_pid
from vaultdr.errors import EXIT_BAD_INPUT, AccessDenied, EnvironmentStartError
from vaultdr.principals import PRINCIPALS, STACK_PRINCIPALS

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "environments/chart/vaultdr-ops"
KIND = REPO / "environments/kind"
EKS = REPO / "environments/eks"
OFFICIAL_KEYS = Path(__file__).parent / "data/official-chart-values.yaml"

#: The Kubernetes version the manifests are validated against (kind's node image and
#: current EKS both run 1.33).
KUBE_VERSION = "1.33.0"
RELEASE = "vaultdr-ops"
NAMESPACE = "vaultdr"
PLACEHOLDER = re.compile(r"REPLACE_WITH_TERRAFORM_OUTPUT_([a-z0-9_]+)")

#: What `terraform output` prints for a plausible EKS deployment.
TERRAFORM_OUTPUTS = {
    "region": "eu-west-1",
    "cluster": "vaultdr-prod",
    "namespace": "vaultdr",
    "seal_kms_key_id": "1234abcd-12ab-34cd-56ef-1234567890ab",
    "seal_kms_key_arn": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "snapshots_kms_key_arn": "arn:aws:kms:eu-west-1:111122223333:key/5678efab-12ab-34cd-56ef-1234567890ab",
    "seal_role_arn": "arn:aws:iam::111122223333:role/vaultdr-vaultdr-prod-seal",
    "snapshot_role_arn": "arn:aws:iam::111122223333:role/vaultdr-vaultdr-prod-snapshot",
    "restore_role_arn": "arn:aws:iam::111122223333:role/vaultdr-vaultdr-prod-restore",
    "configure_role_arn": "arn:aws:iam::111122223333:role/vaultdr-vaultdr-prod-configure",
    "snapshot_bucket": "vaultdr-vaultdr-prod-snapshots-111122223333",
    "snapshot_prefix": "snapshots",
    "ecr_repository_url": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/vaultdr",
}

AGENTS = ("snapshot", "restore", "configure")
#: Where the agents' writable emptyDir is mounted in their pods (a path in the pod).
POD_TMP = "/tmp"  # noqa: S108
AGENT_ENV = (
    "VAULTDR_VAULT_ADDR",
    "VAULTDR_VAULT_CACERT",
    "VAULTDR_NODE_ADDRS",
    "VAULTDR_STATEFULSET",
    "VAULTDR_NAMESPACE",
    "VAULTDR_SA_TOKEN_FILE",
    "AWS_REGION",
)


# -- helpers -------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def filled(text: str) -> str:
    """A values file with every Terraform placeholder replaced by its output."""
    return PLACEHOLDER.sub(lambda match: TERRAFORM_OUTPUTS[match.group(1)], text)


def values_file(path: Path, *, fill: bool = False) -> dict[str, Any]:
    text = path.read_text()
    data: dict[str, Any] = yaml.safe_load(filled(text) if fill else text)
    return data


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="module")
def render(chart: helm_python.Chart) -> Render:
    """Install-render the chart; every rendered object, NOTES.txt aside."""

    def _render(
        values: dict[str, Any] | None = None,
        *,
        name: str = RELEASE,
        namespace: str = NAMESPACE,
    ) -> list[dict[str, Any]]:
        manifests = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
        objects: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith(".yaml"):
                objects.extend(documents(text))
        return objects

    return _render


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod spec of every workload, by workload name."""
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
    }


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def kind_values() -> dict[str, Any]:
    return values_file(KIND / "ops-values.yaml")


def terraform_outputs() -> terraform.TerraformOutputs:
    """TERRAFORM_OUTPUTS as `terraform output -json` prints them, read by vaultdr."""
    printed = {
        k: {"sensitive": False, "type": "string", "value": v} for k, v in TERRAFORM_OUTPUTS.items()
    }
    return terraform.parse_outputs(json.dumps(printed))


def eks_filled() -> terraform.FilledValues:
    """The EKS values as `vaultdr kube values --env eks` fills them from Terraform."""
    return terraform.fill_values(
        engine_template=EKS / "openbao-values.yaml",
        ops_template=EKS / "ops-values.yaml",
        stack=load_stack(EKS / "stack.yaml"),
        outputs=terraform_outputs(),
    )


def eks_values() -> dict[str, Any]:
    return eks_filled().ops


VALUES_SOURCES: dict[str, Callable[[], dict[str, Any]]] = {
    "defaults": dict,
    "kind": kind_values,
    "eks": eks_values,
}


# -- every object is valid Kubernetes ------------------------------------------------------


@pytest.mark.parametrize("source", sorted(VALUES_SOURCES))
def test_every_object_the_chart_renders_is_valid_kubernetes(render: Render, source: str) -> None:
    objects = render(VALUES_SOURCES[source]())
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Deployment",
        "Job",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "ServiceAccount",
        "ServiceAccount",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_every_object_of_the_kind_aws_emulator_is_valid_kubernetes() -> None:
    objects = documents((KIND / "aws-emulator.yaml").read_text())
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "Job", "Role", "RoleBinding"}
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_strict_validation_refuses_a_misplaced_field(render: Render) -> None:
    deployment = copy.deepcopy(one(render(), "Deployment", f"{RELEASE}-snapshot"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFilesystem"):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_the_chart_lints_clean(chart: helm_python.Chart) -> None:
    report = helm_python.lint(
        CHART, kind_values(), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == []


def test_the_chart_and_the_images_are_this_vaultdr_version(chart: helm_python.Chart) -> None:
    assert chart.metadata["appVersion"] == vaultdr.__version__
    job = one(documents((KIND / "aws-emulator.yaml").read_text()), "Job", "vaultdr-aws-bootstrap")
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"vaultdr-agent:{vaultdr.__version__}"


# -- what the objects do -------------------------------------------------------------------


LONG_RUNNING = ("snapshot", "restore")


def probe_max_age(probe: dict[str, Any]) -> float:
    """The --max-age of a `vaultdr agent health` exec probe, checked to parse as the CLI does."""
    command = probe["exec"]["command"]
    assert command[0] == "vaultdr"
    args = build_parser().parse_args(command[1:])
    assert args.agent == "health"
    return float(args.max_age)


@pytest.mark.parametrize("agent", LONG_RUNNING)
def test_the_long_running_agents_are_probed_on_their_heartbeat(render: Render, agent: str) -> None:
    from vaultdr.envs.kube.agents import BEAT_EVERY

    container = pod_specs(render(kind_values()))[f"{RELEASE}-{agent}"]["containers"][0]
    ready, live = container["readinessProbe"], container["livenessProbe"]
    ready_age, live_age = probe_max_age(ready), probe_max_age(live)
    for probe in (ready, live):
        # The CLI starts in over a second on a CPU-limited pod: the 1 s default would fail it.
        assert probe["timeoutSeconds"] >= 10
        assert probe["failureThreshold"] >= 3
    # An idle agent beats every BEAT_EVERY s, whatever its interval: even a probe period
    # after a beat, and with the beat a little late, the heartbeat is well within max-age.
    for age, probe in ((ready_age, ready), (live_age, live)):
        assert age >= 4 * BEAT_EVERY + probe["periodSeconds"]
    assert live_age >= ready_age
    assert live["initialDelaySeconds"] >= 10


def test_a_60s_snapshot_interval_leaves_a_healthy_snapshot_agent_alive(render: Render) -> None:
    """The agent's wait for the next snapshot beats, so liveness does not depend on the
    interval: with the kind stack's 60 s, and with an hour, the probe allows more than
    the longest pause between beats of an idle agent."""
    from vaultdr.envs.kube.agents import BEAT_EVERY

    values = kind_values()
    for interval in ("60s", "1h"):
        values["stack"]["snapshots"]["interval"] = interval
        spec = pod_specs(render(values))[f"{RELEASE}-snapshot"]
        live = probe_max_age(spec["containers"][0]["livenessProbe"])
        assert live > BEAT_EVERY * 2


def test_the_configure_job_has_no_heartbeat_probe(render: Render) -> None:
    container = pod_specs(render())[f"{RELEASE}-configure"]["containers"][0]
    assert "livenessProbe" not in container and "readinessProbe" not in container


def test_the_auth_delegator_binding_names_vaults_service_account(render: Render) -> None:
    objects = render({"vault": {"serviceAccount": "vault"}}, namespace=NAMESPACE)
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vault", "namespace": NAMESPACE}
    ]


def test_the_auth_delegator_binding_can_be_left_to_the_official_chart(render: Render) -> None:
    objects = render({"rbac": {"authDelegator": False}})
    assert not [o for o in objects if o["kind"] == "ClusterRoleBinding"]


def test_the_configure_job_is_a_post_install_and_post_upgrade_hook(render: Render) -> None:
    job = one(render(), "Job", f"{RELEASE}-configure")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["containers"][0]["args"][:2] == ["agent", "configure"]


@pytest.mark.parametrize("agent", ["snapshot", "restore"])
def test_each_agent_runs_alone_even_during_a_rollout(render: Render, agent: str) -> None:
    deployment = one(render(), "Deployment", f"{RELEASE}-{agent}")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["vaultdr"]
    assert container["args"] == ["agent", agent, "--config", "/etc/vaultdr/stack.yaml"]


@pytest.mark.parametrize("source", sorted(VALUES_SOURCES))
def test_every_agent_runs_as_non_root_on_a_read_only_root(render: Render, source: str) -> None:
    specs = pod_specs(render(VALUES_SOURCES[source]()))
    assert sorted(specs) == [f"{RELEASE}-{agent}" for agent in sorted(AGENTS)]
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert set(container["resources"]) == {"requests", "limits"}, name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts[POD_TMP]], name
            assert volumes[mounts["/etc/vaultdr"]]["configMap"]["name"] == f"{RELEASE}-stack"


def test_agents_log_in_with_a_projected_token_for_vault(render: Render) -> None:
    for name, spec in pod_specs(render()).items():
        container = spec["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        token = {v["name"]: v for v in spec["volumes"]}[mounts["/var/run/secrets/vaultdr/token"]]
        (source,) = token["projected"]["sources"]
        assert source["serviceAccountToken"]["audience"] == "vault", name
        assert source["serviceAccountToken"]["path"] == "token", name
        assert env_of(container)["VAULTDR_SA_TOKEN_FILE"] == "/var/run/secrets/vaultdr/token/token"


def test_agents_get_the_vault_ca_and_never_the_server_key(render: Render) -> None:
    for name, spec in pod_specs(render({"vault": {"tlsSecret": "bao-certs"}})).items():
        container = spec["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        secret = {v["name"]: v for v in spec["volumes"]}[mounts["/etc/vaultdr-tls"]]["secret"]
        assert secret == {"secretName": "bao-certs", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
        assert env_of(container)["VAULTDR_VAULT_CACERT"] == "/etc/vaultdr-tls/ca.crt", name


def test_only_the_restore_watcher_and_configure_get_a_kubernetes_api_token(render: Render) -> None:
    specs = pod_specs(render())
    assert specs[f"{RELEASE}-snapshot"]["automountServiceAccountToken"] is False
    assert specs[f"{RELEASE}-restore"]["automountServiceAccountToken"] is True
    assert specs[f"{RELEASE}-configure"]["automountServiceAccountToken"] is True
    accounts = [o for o in render() if o["kind"] == "ServiceAccount"]
    assert all(a["automountServiceAccountToken"] is False for a in accounts)


def test_agents_get_the_service_addresses_of_a_non_default_release_and_namespace(
    render: Render,
) -> None:
    values = {
        "vault": {"release": "vault", "replicas": 5, "serviceAccount": "vault"},
        "aws": {"region": "eu-central-1"},
        "stack": {
            "cluster": "payments",
            "nodes": 5,
            "snapshots": {"service_account": {"namespace": "secrets", "name": "vaultdr-snapshot"}},
        },
    }
    specs = pod_specs(render(values, name="dr", namespace="secrets"))
    assert sorted(specs) == ["dr-configure", "dr-restore", "dr-snapshot"]
    nodes = ",".join(f"https://vault-{i}.vault-internal.secrets.svc:8200" for i in range(5))
    for name, spec in specs.items():
        env = env_of(spec["containers"][0])
        assert set(AGENT_ENV) <= set(env), name
        assert env["VAULTDR_VAULT_ADDR"] == "https://vault-active.secrets.svc:8200"
        assert env["VAULTDR_NODE_ADDRS"] == nodes
        assert env["VAULTDR_STATEFULSET"] == "vault"
        assert env["VAULTDR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        assert env["AWS_REGION"] == "eu-central-1"
        assert "AWS_ENDPOINT_URL" not in env


def test_an_explicit_vault_address_wins(render: Render) -> None:
    addr = "https://vault.example.internal:8200"
    for spec in pod_specs(render({"vault": {"addr": addr}})).values():
        assert env_of(spec["containers"][0])["VAULTDR_VAULT_ADDR"] == addr


def test_on_kind_each_agent_uses_its_own_emulator_principal(render: Render) -> None:
    specs = pod_specs(render(kind_values()))
    expected = {
        "snapshot": "vaultdr-aws-snapshot",
        "restore": "vaultdr-aws-restore",
        "configure": "vaultdr-aws-configure",
    }
    for agent, secret in expected.items():
        env = env_of(specs[f"{RELEASE}-{agent}"]["containers"][0])
        assert env["AWS_ENDPOINT_URL"] == "http://moto:5000"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == {"secretKeyRef": {"name": secret, "key": key}}


def test_on_eks_no_agent_holds_a_static_aws_key(render: Render) -> None:
    for name, spec in pod_specs(render(eks_values())).items():
        env = env_of(spec["containers"][0])
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} & set(env)
        assert env["AWS_REGION"] == TERRAFORM_OUTPUTS["region"], name


def test_irsa_annotations_appear_exactly_when_a_role_arn_is_set(render: Render) -> None:
    arn = TERRAFORM_OUTPUTS["restore_role_arn"]
    objects = render({"serviceAccounts": {"restore": {"name": "vaultdr-restore", "roleArn": arn}}})
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    assert sorted(accounts) == ["vaultdr-configure", "vaultdr-restore", "vaultdr-snapshot"]
    assert accounts["vaultdr-restore"]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": arn
    }
    assert "annotations" not in accounts["vaultdr-snapshot"]["metadata"]
    assert "annotations" not in accounts["vaultdr-configure"]["metadata"]

    eks = {o["metadata"]["name"]: o for o in render(eks_values()) if o["kind"] == "ServiceAccount"}
    for agent in AGENTS:
        annotations = eks[f"vaultdr-{agent}"]["metadata"]["annotations"]
        assert annotations == {"eks.amazonaws.com/role-arn": TERRAFORM_OUTPUTS[f"{agent}_role_arn"]}


def test_the_restore_watcher_may_hold_nodes_back_in_its_namespace_only(render: Render) -> None:
    objects = render()
    role = one(objects, "Role", f"{RELEASE}-restore")
    assert role["metadata"]["namespace"] == NAMESPACE
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("",), ("pods",)): {"get", "delete"},
        (("apps",), ("statefulsets",)): {"patch"},
        (("apps",), ("statefulsets/scale",)): {"patch"},
        (("",), ("persistentvolumeclaims",)): {"delete"},
    }
    binding = one(objects, "RoleBinding", f"{RELEASE}-restore")
    assert binding["roleRef"]["name"] == f"{RELEASE}-restore"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vaultdr-restore", "namespace": NAMESPACE}
    ]


def test_the_stack_configmap_round_trips_the_stack_value(render: Render) -> None:
    values = kind_values()
    configmap = one(render(values), "ConfigMap", f"{RELEASE}-stack")
    mounted = yaml.safe_load(configmap["data"]["stack.yaml"])
    assert mounted == values["stack"]
    stack = parse_stack(mounted, source="the stack ConfigMap")
    assert stack.cluster == "vaultdr-kind"
    assert stack.engine.version == "2.6.2"  # a version string stays a string


def test_the_default_stack_is_a_valid_stack(render: Render) -> None:
    configmap = one(render(), "ConfigMap", f"{RELEASE}-stack")
    stack = parse_stack(yaml.safe_load(configmap["data"]["stack.yaml"]))
    assert stack.nodes == 3
    assert (stack.snapshots.service_account.namespace, stack.snapshots.service_account.name) == (
        NAMESPACE,
        "vaultdr-snapshot",
    )


def test_pods_restart_when_the_stack_changes(render: Render) -> None:
    def checksums(values: dict[str, Any]) -> set[str]:
        return {
            spec_owner["spec"]["template"]["metadata"]["annotations"]["checksum/stack"]
            for spec_owner in render(values)
            if spec_owner["kind"] in ("Deployment", "Job")
        }

    before = checksums({})
    after = checksums({"stack": {"snapshots": {"interval": "5m"}}})
    assert len(before) == len(after) == 1 and before != after


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"vault": {"replicas": "three"}}, "/vault/replicas"),
        ({"vault": {"relase": "openbao"}}, "relase"),
        ({"serviceAccounts": {"snapshot": {"name": "x", "roleArn": "role/x"}}}, "roleArn"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"aws": {"endpointUrl": "moto:5000"}}, "/aws/endpointUrl"),
        ({"stack": {"cluster": "Not_A_Label"}}, "/stack/cluster"),
    ],
)
def test_values_violating_the_schema_are_refused_naming_the_field(
    chart: helm_python.Chart, render: Render, values: dict[str, Any], field: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(field)):
        render(values)
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(field)):
        chart.validate_schema(chart.merge_values(values))


def test_eks_values_with_a_placeholder_left_are_refused(render: Render) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="roleArn"):
        render(values_file(EKS / "ops-values.yaml"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stack": {"nodes": 5}}, "stack.nodes is 5 but vault.replicas is 3"),
        (
            {"stack": {"snapshots": {"service_account": {"namespace": "apps"}}}},
            'stack.snapshots.service_account.namespace is "apps"',
        ),
        (
            {"stack": {"snapshots": {"service_account": {"name": "backup"}}}},
            'stack.snapshots.service_account.name is "backup"',
        ),
    ],
)
def test_a_stack_that_disagrees_with_the_release_is_refused(
    render: Render, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(values)


# -- the kind AWS emulator -----------------------------------------------------------------


def emulator_objects() -> list[dict[str, Any]]:
    return documents((KIND / "aws-emulator.yaml").read_text())


def test_the_emulator_keeps_its_state_it_is_never_restarted_or_doubled() -> None:
    moto = one(emulator_objects(), "Deployment", "moto")
    assert moto["spec"]["replicas"] == 1
    assert moto["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = moto["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"vaultdr-agent:\d+\.\d+\.\d+", container["image"])
    assert "livenessProbe" not in container  # a restart loses every KMS key
    # Readiness must not spend the unauthenticated allowance: the guard answers it itself.
    assert container["readinessProbe"]["httpGet"]["path"] == emulator.READY_PATH


def test_the_in_cluster_emulators_control_api_is_closed_by_the_guard() -> None:
    moto = one(emulator_objects(), "Deployment", "moto")
    (container,) = moto["spec"]["template"]["spec"]["containers"]
    command = " ".join(container["command"])
    assert f"python -m {emulator.MODULE}" in command
    assert "--control-token-file /tmp/control-token" in command
    assert "umask 077" in command  # the guard refuses a token file others can read
    # Nothing in the manifest (probe, bootstrap) relies on the control API any more.
    assert "/moto-api/" not in (KIND / "aws-emulator.yaml").read_text()


def test_the_emulator_is_reachable_from_the_host_through_kinds_port_mapping() -> None:
    service = one(emulator_objects(), "Service", "moto-host")
    (port,) = service["spec"]["ports"]
    kind_config = load_yaml(KIND / "kind-config.yaml")
    mappings = [m for node in kind_config["nodes"] for m in node.get("extraPortMappings", [])]
    assert {
        "containerPort": port["nodePort"],
        "hostPort": port["nodePort"],
        "listenAddress": "127.0.0.1",
        "protocol": "TCP",
    } in mappings
    assert sum(node["role"] == "worker" for node in kind_config["nodes"]) >= 3


def test_the_bootstrap_job_runs_once_and_may_only_write_secrets_and_configmaps() -> None:
    objects = emulator_objects()
    job = one(objects, "Job", "vaultdr-aws-bootstrap")
    assert job["spec"]["backoffLimit"] == 0
    spec = job["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    role = one(objects, "Role", "vaultdr-aws-bootstrap")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["create", "update"]}
    ]


def bootstrap_env() -> dict[str, str]:
    job = one(emulator_objects(), "Job", "vaultdr-aws-bootstrap")
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return {item["name"]: item["value"] for item in env if "value" in item}


def test_the_bootstrap_job_runs_vaultdrs_own_command_not_a_script_of_its_own() -> None:
    objects = emulator_objects()
    job = one(objects, "Job", "vaultdr-aws-bootstrap")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["vaultdr", "agent", "aws-bootstrap"]
    assert not [o for o in objects if o["kind"] == "ConfigMap"]
    assert [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    args = build_parser().parse_args(["agent", "aws-bootstrap"])
    assert args.agent == "aws-bootstrap"
    # The emulator lets exactly as many requests through as the bootstrap spends.
    moto = one(objects, "Deployment", "moto")
    (moto_container,) = moto["spec"]["template"]["spec"]["containers"]
    moto_env = {e["name"]: e["value"] for e in moto_container["env"]}
    assert moto_env["INITIAL_NO_AUTH_ACTION_COUNT"] == str(awsemu.UNAUTHENTICATED_CALLS)


@pytest.fixture
def fresh_emulator(tmp_path: Path) -> Iterator[str]:
    """A just-started emulator with nothing spent, as the moto pod is: its URL."""
    port = free_port()
    record = awsemu.start_moto(tmp_path / "moto", port=port, log=tmp_path / "moto.log")
    try:
        yield awsemu.endpoint_url(port)
    finally:
        stop_pid(record.pid, record.start_time, grace=5.0)


@pytest.fixture
def fake_cluster(tmp_path: Path) -> Iterator[tuple[FakeCluster, KubeApi]]:
    cluster = FakeCluster(namespace=NAMESPACE)
    cluster.populate()
    fake = FakeKubeApi(cluster)
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    api = KubeApi.from_kubeconfig(kubeconfig=str(kubeconfig))
    try:
        yield cluster, api
    finally:
        api.close()
        fake.stop()


def job_settings(endpoint_url: str) -> aws_bootstrap.BootstrapSettings:
    """The Job's own environment, with the emulator started here and the namespace."""
    environ = {**bootstrap_env(), "AWS_ENDPOINT_URL": endpoint_url, "POD_NAMESPACE": NAMESPACE}
    return aws_bootstrap.BootstrapSettings.from_environ(environ)


def written(cluster: FakeCluster) -> list[str]:
    return [f"{r.path.split('/')[-1]}/{r.body['metadata']['name']}" for r in cluster.requests]


def test_the_bootstrap_command_keeps_every_key_in_its_secret_admin_first(
    fresh_emulator: str, fake_cluster: tuple[FakeCluster, KubeApi]
) -> None:
    cluster, api = fake_cluster
    settings = job_settings(fresh_emulator)
    facts = aws_bootstrap.bootstrap_emulator(settings, api, ready_timeout=10)

    names = {who.name: aws_bootstrap.secret_name(who) for who in PRINCIPALS}
    assert written(cluster) == [f"secrets/{names[who.name]}" for who in PRINCIPALS] + [
        f"configmaps/{aws_bootstrap.FACTS_CONFIGMAP}"
    ]
    assert names == Kube().aws_secrets  # the names `vaultdr up --env kind` reads back
    # Only create (POST), never a read: the Job's Role allows create and update alone.
    assert {r.method for r in cluster.requests} == {"POST"}
    for secret in names.values():
        assert set(cluster.secret_data(secret)) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        labels = cluster.get("secrets", NAMESPACE, secret)["metadata"]["labels"]  # type: ignore[index]
        assert labels == aws_bootstrap.LABELS
    stored = cluster.get("configmaps", NAMESPACE, aws_bootstrap.FACTS_CONFIGMAP)
    assert stored is not None and stored["data"] == facts
    cluster_name = settings.cluster
    assert facts["kms_alias"] == f"alias/vaultdr-{cluster_name}-seal"
    assert facts["ssm_prefix"] == f"/vaultdr/{cluster_name}"
    assert facts["endpoint_url"] == fresh_emulator
    assert {k: v for k, v in facts.items() if k.endswith("_user")} == {
        f"{who.name}_user": who.user_name(cluster_name) for who in STACK_PRINCIPALS
    }
    # The kind stack names the seal's user as the principal revoke-kms denies.
    kind_stack = load_yaml(KIND / "stack.yaml")
    assert kind_stack["kube"]["seal_principal"] == facts["seal_user"]


def test_the_principals_the_job_creates_may_do_their_work_and_nothing_else(
    fresh_emulator: str, fake_cluster: tuple[FakeCluster, KubeApi]
) -> None:
    cluster, api = fake_cluster
    settings = job_settings(fresh_emulator)
    facts = aws_bootstrap.bootstrap_emulator(settings, api, ready_timeout=10)
    bucket, root_token = facts["bucket"], f"{facts['ssm_prefix']}/root-token"

    def aws(principal: str) -> Aws:
        data = cluster.secret_data(f"vaultdr-aws-{principal}")
        keys = AwsCredentials(data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"])
        return Aws(AwsTarget(facts["region"], fresh_emulator, keys), max_attempts=1)

    def refused(call: Callable[[], object]) -> bool:
        try:
            call()
        except AccessDenied:
            return True
        return False

    admin = aws("admin")
    for who in STACK_PRINCIPALS:
        assert admin.list_user_policies(facts[f"{who.name}_user"]) == [who.policy_name]
    admin.put_secure_parameter(root_token, "not-a-real-token")

    seal = aws("seal")
    assert seal.decrypt(seal.encrypt(facts["kms_alias"], b"root key")) == b"root key"
    assert refused(lambda: seal.list_objects(bucket))
    assert refused(lambda: seal.create_user("vaultdr-evil"))

    snapshot = aws("snapshot")
    key = "snapshots/x/20260101T000000Z.snap"
    snapshot.put_object(bucket, key, b"raft", sse_kms_key_id=facts["kms_key_id"])
    assert snapshot.stat_object(bucket, key)["sse"] == "aws:kms"
    assert refused(lambda: snapshot.get_secure_parameter(root_token))
    assert refused(lambda: snapshot.delete_object(bucket, key))  # only whole versions

    restore = aws("restore")
    assert restore.get_object(bucket, key) == b"raft"
    assert restore.get_secure_parameter(root_token) == "not-a-real-token"
    assert refused(lambda: restore.delete_all_versions(bucket, key))
    assert refused(lambda: restore.put_secure_parameter(root_token, "forged"))

    configure = aws("configure")
    assert configure.get_secure_parameter(root_token) == "not-a-real-token"
    assert refused(lambda: configure.list_objects(bucket))
    assert refused(lambda: configure.decrypt(b"x" * 64))

    assert snapshot.delete_all_versions(bucket, key) == 1


def test_a_second_bootstrap_of_the_same_emulator_fails_and_replaces_no_secret(
    fresh_emulator: str, fake_cluster: tuple[FakeCluster, KubeApi]
) -> None:
    cluster, api = fake_cluster
    settings = job_settings(fresh_emulator)
    aws_bootstrap.bootstrap_emulator(settings, api, ready_timeout=10)
    before = {name: cluster.secret_data(name) for name in Kube().aws_secrets.values()}
    requests = len(cluster.requests)

    with pytest.raises(EnvironmentStartError, match="cannot bootstrap"):
        aws_bootstrap.bootstrap_emulator(settings, api, ready_timeout=10)
    assert len(cluster.requests) == requests
    assert {name: cluster.secret_data(name) for name in before} == before


def test_the_bootstrap_command_refuses_to_run_without_the_emulators_address(
    tmp_path: Path,
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "vaultdr.cli", "agent", "aws-bootstrap"],
        env={**environ, "POD_NAMESPACE": NAMESPACE, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert "no AWS_ENDPOINT_URL" in result.stderr
    assert "never AWS itself" in result.stderr


# -- the official charts' values -----------------------------------------------------------

OFFICIAL_VALUES = {
    "openbao-kind": ("openbao", KIND / "openbao-values.yaml"),
    "openbao-eks": ("openbao", EKS / "openbao-values.yaml"),
    "vault-kind": ("vault", KIND / "vault-values.yaml"),
}


def official_keys(chart_name: str) -> set[str]:
    """The chart's values.yaml leaves and the undeclared paths its templates read."""
    recorded = load_yaml(OFFICIAL_KEYS)[chart_name]
    return set(recorded["keys"]) | set(recorded["template_keys"])


def dotted_paths(values: dict[str, Any], leaves: set[str], prefix: str = "") -> Iterator[str]:
    """Every key path of ``values``, not descending below a path in ``leaves``."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in leaves or not isinstance(value, dict) or not value:
            yield path
        else:
            yield from dotted_paths(value, leaves, f"{path}.")


def test_the_recorded_chart_keys_are_leaves_of_a_pinned_chart_version() -> None:
    recorded = load_yaml(OFFICIAL_KEYS)
    for chart_name in ("openbao", "vault"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", recorded[chart_name]["version"])
        keys = set(recorded[chart_name]["keys"])
        nested = {k for k in keys for other in keys if k.startswith(f"{other}.")}
        assert not nested, f"{chart_name}: a key under another listed key hides nothing: {nested}"


@pytest.mark.parametrize("name", sorted(OFFICIAL_VALUES))
def test_official_chart_values_only_use_keys_the_chart_defines(name: str) -> None:
    chart_name, path = OFFICIAL_VALUES[name]
    keys = official_keys(chart_name)
    unknown = sorted(set(dotted_paths(load_yaml(path), keys)) - keys)
    assert not unknown, f"{path.name}: not a key of the {chart_name} chart: {unknown}"
    recorded = load_yaml(OFFICIAL_KEYS)[chart_name]
    assert f"{recorded['chart']} {recorded['version']}" in path.read_text()


def chart_key_paths() -> Any:
    """scripts/chart_key_paths.py, the generator of the recorded keys, as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "chart_key_paths", REPO / "scripts/chart_key_paths.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_recorded_keys_are_those_of_the_versions_the_stacks_pin() -> None:
    recorded = load_yaml(OFFICIAL_KEYS)
    kind_stack = load_yaml(KIND / "stack.yaml")["kube"]
    assert (recorded["openbao"]["chart"], recorded["openbao"]["version"]) == (
        kind_stack["chart"],
        kind_stack["chart_version"],
    )
    assert recorded["openbao"]["version"] == Kube().chart_version
    # Chart.yaml of openbao-helm at the tag openbao-0.27.0, vault-helm at v0.30.1.
    assert recorded["openbao"]["app_version"] == "v2.5.2"
    assert (recorded["vault"]["version"], recorded["vault"]["app_version"]) == ("0.30.1", "1.20.1")
    # openbao 0.27.0 has the value (default OrderedReady); vault-helm 0.30.1 hard-codes
    # `podManagementPolicy: Parallel` in templates/server-statefulset.yaml and has none.
    assert "server.podManagementPolicy" in recorded["openbao"]["keys"]
    assert "server.podManagementPolicy" not in official_keys("vault")
    assert "fullnameOverride" in official_keys("openbao") and "fullnameOverride" in official_keys(
        "vault"
    )


def test_the_recorded_keys_file_says_how_to_regenerate_it() -> None:
    text = OFFICIAL_KEYS.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("python scripts/chart_key_paths.py" in line for line in header)
    assert any("checkout -q openbao-0.27.0" in line for line in header)
    assert any("checkout -q v0.30.1" in line for line in header)


def test_the_key_script_flattens_values_to_leaves_and_finds_undeclared_template_keys(
    tmp_path: Path,
) -> None:
    chart_dir = tmp_path / "demo"
    (chart_dir / "templates").mkdir(parents=True)
    (chart_dir / "Chart.yaml").write_text(
        "apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: v9\n"
    )
    (chart_dir / "values.yaml").write_text(
        "server:\n  image: {repository: r, tag: ''}\n  extraEnvironmentVars: {}\n"
        "  extraVolumes: []\n  ha:\n    raft:\n      config: |\n        ui = false\n"
        "ui:\n  enabled: false\n"
    )
    (chart_dir / "templates/_helpers.tpl").write_text(
        "{{ .Values.fullnameOverride }} {{ $.Values.server.image.tag }} {{ .Values.server.gid }}"
        " {{ .Values.server.extraEnvironmentVars.X }}"
    )
    script = chart_key_paths()
    record = script.chart_record("demo/demo", chart_dir)
    assert record["version"] == "1.2.3" and record["app_version"] == "v9"
    assert record["keys"] == [
        "server.image.repository",
        "server.image.tag",
        "server.extraEnvironmentVars",
        "server.extraVolumes",
        "server.ha.raft.config",
        "ui.enabled",
    ]
    assert record["template_keys"] == ["fullnameOverride", "server.gid"]
    rendered = script.render({"openbao": record})
    assert yaml.safe_load(rendered) == {"openbao": record}
    assert script.main(["--chart", "x", "x/x", str(tmp_path / "missing")]) == 2


def hcl_blocks(config: str, header: str) -> list[str]:
    """The bodies of top-level or nested HCL blocks whose header matches ``header``."""
    bodies = []
    for match in re.finditer(header + r"\s*\{", config):
        depth, start = 1, match.end()
        for index in range(start, len(config)):
            depth += {"{": 1, "}": -1}.get(config[index], 0)
            if depth == 0:
                bodies.append(config[start:index])
                break
    return bodies


def hcl_setting(body: str, name: str) -> str | None:
    match = re.search(rf"^\s*{name}\s*=\s*\"?([^\"\n]*)\"?\s*$", body, re.MULTILINE)
    return match.group(1) if match else None


@pytest.mark.parametrize("name", sorted(OFFICIAL_VALUES))
def test_official_chart_values_set_what_vaultdr_relies_on(name: str) -> None:
    chart_name, path = OFFICIAL_VALUES[name]
    values = load_yaml(path)
    server = values["server"]
    assert values["global"]["tlsDisable"] is False
    assert values["injector"]["enabled"] is False and values["ui"]["enabled"] is False
    assert server["ha"]["enabled"] is True and server["ha"]["replicas"] == 3
    assert server["ha"]["raft"]["enabled"] is True and server["ha"]["raft"]["setNodeId"] is True
    assert server["serviceAccount"]["serviceDiscovery"]["enabled"] is True
    config = server["ha"]["raft"]["config"]
    userconfig = f"/{chart_name}/userconfig/{chart_name}-tls"

    (listener,) = hcl_blocks(config, r'listener\s+"tcp"')
    assert hcl_setting(listener, "tls_cert_file") == f"{userconfig}/tls.crt"
    assert hcl_setting(listener, "tls_key_file") == f"{userconfig}/tls.key"
    assert hcl_setting(listener, "tls_disable") is None
    assert {"type": "secret", "name": f"{chart_name}-tls"} in server["extraVolumes"]

    (storage,) = hcl_blocks(config, r'storage\s+"raft"')
    assert hcl_setting(storage, "performance_multiplier") == "1"
    joins = hcl_blocks(storage, "retry_join")
    assert [hcl_setting(j, "leader_api_addr") for j in joins] == [
        f"https://{chart_name}-{i}.{chart_name}-internal:8200" for i in range(3)
    ]
    assert {hcl_setting(j, "leader_ca_cert_file") for j in joins} == {f"{userconfig}/ca.crt"}

    assert hcl_blocks(config, r'service_registration\s+"kubernetes"') == [""]
    (seal,) = hcl_blocks(config, r'seal\s+"awskms"')
    assert hcl_setting(seal, "region") and hcl_setting(seal, "kms_key_id")
    if "kind" in name:
        # The emulator the bootstrap Job set up: its service, its alias, its seal principal.
        job_env = bootstrap_env()
        assert hcl_setting(seal, "endpoint") == job_env["AWS_ENDPOINT_URL"]
        assert hcl_setting(seal, "region") == job_env["AWS_REGION"]
        assert hcl_setting(seal, "kms_key_id") == f"alias/vaultdr-{job_env['VAULTDR_CLUSTER']}-seal"
        secrets = {e["secretName"] for e in server["extraSecretEnvironmentVars"]}
        assert secrets == {"vaultdr-aws-seal"}
    else:
        # Real AWS KMS: no endpoint override, no static key, the seal role through IRSA.
        assert hcl_setting(seal, "endpoint") is None
        assert "extraSecretEnvironmentVars" not in server
        role = server["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert role == "REPLACE_WITH_TERRAFORM_OUTPUT_seal_role_arn"


def test_the_kind_ops_values_match_the_emulator_and_the_official_release() -> None:
    values = kind_values()
    job_env = bootstrap_env()
    openbao = load_yaml(KIND / "openbao-values.yaml")
    assert values["stack"]["cluster"] == job_env["VAULTDR_CLUSTER"]
    assert values["stack"]["snapshots"]["bucket"] == job_env["VAULTDR_BUCKET"]
    assert values["aws"]["endpointUrl"] == job_env["AWS_ENDPOINT_URL"]
    assert values["vault"]["replicas"] == openbao["server"]["ha"]["replicas"]
    assert values["stack"]["engine"]["version"] == openbao["server"]["image"]["tag"]


# -- the agent image -----------------------------------------------------------------------


def test_the_agent_image_runs_vaultdr_as_a_non_root_user_without_test_extras() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    (user,) = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert user.split(":")[0] not in ("0", "root")
    assert re.search(r'^ENTRYPOINT \["vaultdr"\]$', dockerfile, re.MULTILINE)
    assert re.search(r"pip install \.(\s|$)", dockerfile) and "[test]" not in dockerfile
    uid = int(user.split(":")[0])
    assert load_yaml(CHART / "values.yaml")["podSecurityContext"]["runAsUser"] == uid


# -- the kind drill workflow ---------------------------------------------------------------


def test_the_kind_drill_workflow_keeps_evidence_and_tears_down_whatever_happens() -> None:
    workflow = load_yaml(REPO / ".github/workflows/drill-kind.yml")
    triggers = workflow[True]  # YAML 1.1 reads the bare key `on` as true
    assert set(triggers) == {"schedule", "pull_request", "workflow_dispatch"}
    steps = workflow["jobs"]["drill"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert "make setup" in runs
    drill = runs.index(".venv/bin/vaultdr drill --env kind --junit --report-dir reports")
    upload = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/upload-"))
    teardown = runs.index(".venv/bin/vaultdr down --env kind")
    assert drill < upload < teardown
    assert steps[upload]["if"] == steps[teardown]["if"] == "always()"
    assert steps[upload]["with"]["path"] == "reports/"
    kind = next(s for s in steps if s.get("uses", "").startswith("helm/kind-action"))
    assert kind["with"]["config"] == "environments/kind/kind-config.yaml"
    assert kind["with"]["cluster_name"] == load_yaml(KIND / "kind-config.yaml")["name"]


# -- EKS values filled from Terraform ------------------------------------------------------------


def test_the_filled_eks_values_run_the_ecr_image_and_encrypt_snapshots_with_the_snapshot_key(
    render: Render, tmp_path: Path
) -> None:
    objects = render(eks_values())
    images = {c["image"] for spec in pod_specs(objects).values() for c in spec["containers"]}
    assert images == {f"{TERRAFORM_OUTPUTS['ecr_repository_url']}:{vaultdr.__version__}"}
    configmap = one(objects, "ConfigMap", f"{RELEASE}-stack")
    stack = parse_stack(yaml.safe_load(configmap["data"]["stack.yaml"]), source="the ConfigMap")
    assert (stack.cluster, stack.region) == (TERRAFORM_OUTPUTS["cluster"], "eu-west-1")
    assert stack.snapshots.bucket == TERRAFORM_OUTPUTS["snapshot_bucket"]
    # The pod's snapshot agent, from the stack the chart mounts: the snapshot key, on which
    # the snapshot role has its grant, never the seal key, on which it has none.
    pod = agents.PodSettings.from_environ(
        {
            "VAULTDR_VAULT_ADDR": "https://openbao-active.vaultdr.svc:8200",
            "VAULTDR_NODE_ADDRS": "https://openbao-0.openbao-internal:8200",
            "VAULTDR_STATEFULSET": "openbao",
            "VAULTDR_STATE_DIR": str(tmp_path),
        }
    )
    agent = agents.snapshot_agent(pod, stack)
    assert agent.settings.kms_key_id == TERRAFORM_OUTPUTS["snapshots_kms_key_arn"]
    assert agent.settings.kms_key_id != TERRAFORM_OUTPUTS["seal_kms_key_arn"]


def test_the_filled_engine_values_give_the_server_the_seal_role_and_key() -> None:
    engine = eks_filled().engine
    server = engine["server"]
    assert server["serviceAccount"]["annotations"] == {
        "eks.amazonaws.com/role-arn": TERRAFORM_OUTPUTS["seal_role_arn"]
    }
    (seal,) = hcl_blocks(server["ha"]["raft"]["config"], 'seal "awskms"')
    assert hcl_setting(seal, "kms_key_id") == TERRAFORM_OUTPUTS["seal_kms_key_id"]
    assert hcl_setting(seal, "region") == TERRAFORM_OUTPUTS["region"]
    assert not PLACEHOLDER.search(yaml.safe_dump(engine) + yaml.safe_dump(eks_values()))


# -- TLS from cert-manager ------------------------------------------------------------------------
CERT_MANAGER = {"tls": {"certManager": {"enabled": True}}}


def cert_manager_objects(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["kind"], o["metadata"]["name"]): o
        for o in objects
        if o["apiVersion"] == "cert-manager.io/v1"
    }


def test_without_the_option_the_chart_renders_nothing_of_cert_manager(render: Render) -> None:
    for source in VALUES_SOURCES.values():
        assert cert_manager_objects(render(source())) == {}


def test_the_certificate_issues_the_servers_secret_for_every_name_a_node_is_reached_by(
    render: Render, tmp_path: Path
) -> None:
    from vaultdr.envs.kube.clusters import KindEnvironment

    stack = {"snapshots": {"service_account": {"namespace": "bao-prod"}}}
    found = cert_manager_objects(render({**CERT_MANAGER, "stack": stack}, namespace="bao-prod"))
    server = found[("Certificate", f"{RELEASE}-server")]["spec"]
    assert server["secretName"] == "openbao-tls"
    # The same names as the certificate `vaultdr up` issues from its own CA.
    env = KindEnvironment(tmp_path, Stack(kube=Kube(namespace="bao-prod")))
    assert set(server["dnsNames"]) | set(server["ipAddresses"]) == set(deploy.node_hosts(env))
    assert {"server auth", "client auth"} <= set(server["usages"])
    # Signed by the chart's own CA, so the Secret carries the ca.crt vaultdr verifies with.
    assert server["issuerRef"] == {
        "name": f"{RELEASE}-ca",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    ca = found[("Certificate", f"{RELEASE}-ca")]["spec"]
    assert ca["isCA"] is True
    assert found[("Issuer", f"{RELEASE}-ca")]["spec"] == {"ca": {"secretName": ca["secretName"]}}
    assert ca["issuerRef"]["name"] == f"{RELEASE}-selfsigned"
    assert found[("Issuer", f"{RELEASE}-selfsigned")]["spec"] == {"selfSigned": {}}
    assert all(o["metadata"]["namespace"] == "bao-prod" for o in found.values())


def test_an_existing_issuer_is_used_instead_of_the_charts_own_ca(render: Render) -> None:
    values = copy.deepcopy(CERT_MANAGER)
    values["tls"]["certManager"]["issuerRef"] = {"name": "corp-ca", "kind": "ClusterIssuer"}
    values["tls"]["certManager"]["extraDnsNames"] = ["bao.example.com"]
    found = cert_manager_objects(render(values))
    assert list(found) == [("Certificate", f"{RELEASE}-server")]
    spec = found[("Certificate", f"{RELEASE}-server")]["spec"]
    assert spec["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert "bao.example.com" in spec["dnsNames"]


def test_the_rest_of_the_chart_with_cert_manager_is_still_valid_kubernetes(render: Render) -> None:
    for obj in render({**kind_values(), **CERT_MANAGER}):
        if obj["apiVersion"] != "cert-manager.io/v1":  # a CRD: not in Kubernetes' schemas
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ({"duration": "90 days"}, "/tls/certManager/duration"),
        ({"issuer": "corp-ca"}, "/tls/certManager"),
        ({"issuerRef": {"name": "Corp CA"}}, "/tls/certManager/issuerRef/name"),
    ],
)
def test_cert_manager_values_violating_the_schema_are_refused(
    render: Render, setting: dict[str, Any], field: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(field)):
        render({"tls": {"certManager": {"enabled": True, **setting}}})
