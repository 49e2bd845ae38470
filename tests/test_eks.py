"""EKS without an EKS cluster: the values filled from ``terraform output -json``, the agent
image and the snapshot key they carry, the nodes' TLS from cert-manager, and revoke-kms
waiting for IAM.

The Kubernetes API is the fake of tests/fake_kube.py (over HTTP, the official client on
the other side); AWS is the real moto server with IAM enforced. ``vaultdr`` runs as a
subprocess where the exit code and the printed lines are the behaviour.

What this cannot show: that EKS's pod identity webhook, STS and cert-manager behave as
their sources say (docs/kubernetes.md lists what only a real cluster shows).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import vaultdr
from tests.fake_kube import FakeCluster, FakeKubeApi
from vaultdr.config import Kube, Stack, load_stack
from vaultdr.envs import common
from vaultdr.envs.kube import deploy, terraform
from vaultdr.envs.kube import env as kube_env
from vaultdr.envs.kube.clusters import EksEnvironment, KindEnvironment
from vaultdr.envs.local import awsemu
from vaultdr.envs.local.processes import free_port, stop_pid
from vaultdr.errors import (
    EXIT_BAD_INPUT,
    AccessDenied,
    ConfigError,
    EnvironmentStartError,
    FaultError,
)
from vaultdr.upgrade import kube as upgrade_kube

REPO = Path(__file__).resolve().parent.parent
EKS = REPO / "environments/eks"
NS = "vaultdr"
ECR = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/vaultdr"
SEAL_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SNAPSHOT_KEY = "arn:aws:kms:eu-west-1:111122223333:key/5678efab-12ab-34cd-56ef-1234567890ab"

#: What `terraform output` has for a plausible deployment (outputs.tf's names).
OUTPUTS = {
    "region": "eu-west-1",
    "cluster": "vaultdr-prod",
    "namespace": NS,
    "seal_kms_key_id": "1234abcd-12ab-34cd-56ef-1234567890ab",
    "seal_kms_key_arn": SEAL_KEY,
    "seal_kms_alias": "alias/vaultdr-vaultdr-prod-seal",
    "snapshots_kms_key_arn": SNAPSHOT_KEY,
    "snapshot_bucket": "vaultdr-vaultdr-prod-snapshots-111122223333",
    "snapshot_prefix": "snapshots",
    "ssm_prefix": "/vaultdr/vaultdr-prod",
    "seal_role_arn": "arn:aws:iam::111122223333:role/vaultdr-vaultdr-prod-seal",
    "snapshot_role_arn": "arn:aws:iam::111122223333:role/vaultdr-vaultdr-prod-snapshot",
    "restore_role_arn": "arn:aws:iam::111122223333:role/vaultdr-vaultdr-prod-restore",
    "configure_role_arn": "arn:aws:iam::111122223333:role/vaultdr-vaultdr-prod-configure",
    "ecr_repository_url": ECR,
}


def printed(outputs: dict[str, Any]) -> str:
    """``terraform output -json`` of ``outputs``."""
    return json.dumps(
        {k: {"sensitive": False, "type": "string", "value": v} for k, v in outputs.items()}
    )


def tf_file(tmp_path: Path, outputs: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "tf.json"
    path.write_text(printed(OUTPUTS if outputs is None else outputs))
    return path


def vaultdr_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vaultdr.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        input=stdin,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )


def eks_env(state: Path, **kwargs: Any) -> EksEnvironment:
    stack_file = EKS / "stack.yaml"
    return EksEnvironment(state, load_stack(stack_file), stack_file=str(stack_file), **kwargs)


def fill(state: Path, tmp_path: Path, outputs: dict[str, Any] | None = None) -> list[str]:
    return deploy.fill_values_from_terraform(eks_env(state), str(tf_file(tmp_path, outputs)))


# --- values from Terraform's outputs ---------------------------------------------------------
def test_up_dry_run_with_terraform_outputs_shows_the_filled_values_and_the_ecr_image(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    result = vaultdr_cli(
        "up", "--env", "eks", "--terraform-output", str(tf_file(tmp_path)), "--dry-run",
        "--state-dir", str(state),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    image = f"{ECR}:{vaultdr.__version__}"
    (filled,) = [line for line in lines if line.startswith("use the values filled")]
    for value in (SEAL_KEY.rsplit("/", 1)[1], OUTPUTS["seal_role_arn"], SNAPSHOT_KEY, image):
        assert value in filled
    engine = next(line for line in lines if "upgrade --install openbao " in line)
    ops = next(line for line in lines if "upgrade --install vaultdr-ops " in line)
    filled_dir = state / "eks-values"
    assert f"--values {filled_dir / 'openbao-values.yaml'}" in engine
    assert f"--values {filled_dir / 'ops-values.yaml'}" in ops
    assert f"--set image.repository={ECR},image.tag={vaultdr.__version__}" in ops
    for path in filled_dir.glob("*-values.yaml"):
        assert "REPLACE_WITH_TERRAFORM_OUTPUT" not in path.read_text(), path
    ops_values = yaml.safe_load((filled_dir / "ops-values.yaml").read_text())
    assert ops_values["image"] == {
        "repository": ECR,
        "tag": vaultdr.__version__,
        "pullPolicy": "IfNotPresent",
    }
    assert ops_values["stack"]["kube"]["snapshot_kms_key_id"] == SNAPSHOT_KEY


def test_kube_values_reads_terraform_output_from_standard_input(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = vaultdr_cli(
        "kube", "values", "--env", "eks", "--terraform-output", "-", "--state-dir", str(state),
        stdin=printed(OUTPUTS),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {state / 'eks-values' / 'ops-values.yaml'}" in result.stderr
    engine = yaml.safe_load((state / "eks-values/openbao-values.yaml").read_text())
    annotations = engine["server"]["serviceAccount"]["annotations"]
    assert annotations == {"eks.amazonaws.com/role-arn": OUTPUTS["seal_role_arn"]}
    assert (
        'kms_key_id = "1234abcd-12ab-34cd-56ef-1234567890ab"'
        in engine["server"]["ha"]["raft"]["config"]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"snapshots_kms_key_arn": None}, "missing output snapshots_kms_key_arn"),
        ({"seal_role_arn": 111122223333}, "output seal_role_arn is a number, not a string"),
        ({"snapshot_role_arn": "vaultdr-snapshot"}, "output snapshot_role_arn is 'vaultdr-snapshot', which is not an IAM role ARN"),
        ({"seal_kms_key_arn": "alias/vaultdr-seal"}, "output seal_kms_key_arn is 'alias/vaultdr-seal', which is not a KMS key ARN"),
        ({"snapshot_bucket": ""}, "output snapshot_bucket is empty"),
        ({"region": ["eu-west-1"]}, "output region is a list, not a string"),
    ],
)  # fmt: skip
def test_missing_or_ill_typed_outputs_are_bad_input_naming_the_output(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    outputs = {k: v for k, v in {**OUTPUTS, **change}.items() if v is not None}
    state = tmp_path / "state"
    result = vaultdr_cli(
        "up", "--env", "eks", "--terraform-output", str(tf_file(tmp_path, outputs)), "--dry-run",
        "--state-dir", str(state),
    )  # fmt: skip
    assert result.returncode == EXIT_BAD_INPUT
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "eks-values").exists()


def test_output_that_is_not_terraform_json_is_bad_input(tmp_path: Path) -> None:
    for text, message in (("region = eu-west-1", "not JSON"), ("[1, 2]", "not a mapping")):
        result = vaultdr_cli(
            "kube", "values", "--env", "eks", "--terraform-output", "-", stdin=text
        )
        assert result.returncode == EXIT_BAD_INPUT and message in result.stderr
    missing = vaultdr_cli(
        "kube", "values", "--env", "eks", "--terraform-output", str(tmp_path / "no.json")
    )
    assert missing.returncode == EXIT_BAD_INPUT and "no such file" in missing.stderr


def test_terraform_outputs_are_for_eks_only(tmp_path: Path) -> None:
    result = vaultdr_cli(
        "kube", "values", "--env", "kind", "--terraform-output", str(tf_file(tmp_path))
    )
    assert result.returncode == EXIT_BAD_INPUT and "for --env eks" in result.stderr


def test_the_eks_environment_takes_its_aws_facts_from_the_kept_outputs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert eks_env(state).snapshot_kms_key_id() == "alias/vaultdr-vaultdr-eks-seal"  # before
    fill(state, tmp_path)
    env = eks_env(state)
    assert (env.stack.cluster, env.stack.region) == ("vaultdr-prod", "eu-west-1")
    assert env.snapshot_location() == (OUTPUTS["snapshot_bucket"], "snapshots")
    assert env.kms_key_id() == SEAL_KEY
    assert env.kube.seal_principal == OUTPUTS["seal_role_arn"]
    assert deploy.agent_image(env) == f"{ECR}:{vaultdr.__version__}"
    # The snapshot agent run from here encrypts with the snapshot key, as the pod's does.
    offline = OfflineEks(state, env.stack, stack_file=str(EKS / "stack.yaml"))
    assert offline.snapshot_settings().kms_key_id == SNAPSHOT_KEY


class OfflineEks(EksEnvironment):
    """The eks environment without its cluster: what the snapshot settings read of it."""

    def node_addresses(self) -> list[str]:
        return ["https://openbao-0.openbao-internal:8200"]

    def ca_file(self) -> Path:
        return self.state_dir / "ca.pem"


def test_outputs_filled_again_replace_the_earlier_ones(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fill(state, tmp_path)
    moved = "222233334444.dkr.ecr.eu-west-1.amazonaws.com/vaultdr"
    fill(state, tmp_path, {**OUTPUTS, "ecr_repository_url": moved, "snapshot_prefix": "snaps"})
    env = eks_env(state)
    assert deploy.agent_image(env) == f"{moved}:{vaultdr.__version__}"
    assert env.snapshot_location()[1] == "snaps"
    ops = yaml.safe_load(terraform.ops_values_path(state).read_text())
    assert ops["image"]["repository"] == moved


def test_the_stack_the_ops_chart_gets_carries_terraforms_facts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fill(state, tmp_path)
    env = eks_env(state)
    deploy.write_stack_values(env)
    mounted = yaml.safe_load(deploy.stack_values_file(env).read_text())["stack"]
    assert mounted["cluster"] == "vaultdr-prod"
    assert mounted["snapshots"]["bucket"] == OUTPUTS["snapshot_bucket"]
    assert mounted["kube"]["snapshot_kms_key_id"] == SNAPSHOT_KEY
    assert mounted["kube"]["seal_principal"] == OUTPUTS["seal_role_arn"]
    assert mounted["configure"]["auth"]["kubernetes"]["roles"]["web"]["ttl"] == "1h"  # as written


def test_an_image_stack_yaml_names_wins_over_the_ecr_repository(tmp_path: Path) -> None:
    stack = load_stack(EKS / "stack.yaml")
    assert stack.kube is not None
    mine = stack.model_copy(update={"kube": stack.kube.model_copy(update={"image": "reg/agent:7"})})
    outputs = terraform.parse_outputs(printed({**OUTPUTS, "ecr_repository_url": ""}))
    assert terraform.apply_outputs(mine, outputs).kube.image == "reg/agent:7"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="ecr_repository_url is empty") as err:
        terraform.apply_outputs(stack, outputs)
    assert "kube.image" in err.value.hint


def test_outputs_for_another_namespace_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="IRSA roles trust service accounts of 'bao' only"):
        fill(tmp_path / "state", tmp_path, {**OUTPUTS, "namespace": "bao"})


def test_a_placeholder_naming_no_output_is_refused(tmp_path: Path) -> None:
    template = tmp_path / "ops-values.yaml"
    template.write_text(
        (EKS / "ops-values.yaml").read_text()
        + "podLabels: {team: REPLACE_WITH_TERRAFORM_OUTPUT_team}\n"
    )
    with pytest.raises(
        ConfigError, match="names output team, which terraform output does not have"
    ):
        terraform.fill_values(
            engine_template=EKS / "openbao-values.yaml",
            ops_template=template,
            stack=load_stack(EKS / "stack.yaml"),
            outputs=terraform.parse_outputs(printed(OUTPUTS)),
        )


def test_up_on_eks_refuses_the_placeholder_templates_until_they_are_filled(tmp_path: Path) -> None:
    env = eks_env(tmp_path / "state")
    with pytest.raises(ConfigError, match="still holds Terraform placeholders") as err:
        deploy.check_values_filled(env)
    assert err.value.exit_code == EXIT_BAD_INPUT
    assert "vaultdr kube values --env eks --terraform-output" in err.value.hint
    fill(tmp_path / "state", tmp_path)
    deploy.check_values_filled(eks_env(tmp_path / "state"))  # filled: accepted


def test_only_kind_installs_the_locally_built_image(tmp_path: Path) -> None:
    kind = KindEnvironment(tmp_path / "kind", Stack(kube=Kube()))
    assert (
        f"image.repository=vaultdr-agent,image.tag={vaultdr.__version__}"
        in deploy.helm_install_ops(kind)
    )
    bare = deploy.helm_install_ops(eks_env(tmp_path / "eks"))
    assert not any(arg.startswith("image.") for arg in bare)  # the values file's image stands


# --- bad Terraform outputs, a bad kept copy, bad values files ----------------------------------
def test_a_prefix_with_a_trailing_slash_is_the_prefix_without_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fill(state, tmp_path, {**OUTPUTS, "snapshot_prefix": "snapshots/"})
    env = eks_env(state)
    assert env.snapshot_location() == (OUTPUTS["snapshot_bucket"], "snapshots")
    ops = yaml.safe_load(terraform.ops_values_path(state).read_text())
    assert ops["stack"]["snapshots"]["prefix"] == "snapshots"


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("snaps//daily", "output snapshot_prefix is 'snaps//daily', which stack.yaml's snapshots.prefix does not accept"),
        ("../other", "output snapshot_prefix is '../other', which stack.yaml's snapshots.prefix does not accept"),
        ("/", "output snapshot_prefix is empty"),
    ],
)  # fmt: skip
def test_an_output_stack_yaml_refuses_is_bad_input_naming_the_output(
    tmp_path: Path, prefix: str, message: str
) -> None:
    tf = tf_file(tmp_path, {**OUTPUTS, "snapshot_prefix": prefix})
    state = tmp_path / "state"
    result = vaultdr_cli(
        "kube", "values", "--env", "eks", "--terraform-output", str(tf), "--state-dir", str(state)
    )
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert message in result.stderr
    if prefix != "/":
        assert str(tf) in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert not (state / "eks-values").exists()


def kept(state: Path) -> Path:
    return state / "eks-values" / terraform.OUTPUTS_FILE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "not vaultdr's record"),
        ('{"values": {}}', "missing outputs region, cluster, namespace"),
        ('{"values": {"region": 1}, "sensitive": []}', "output region is a number, not a string"),
        ('{"values": [], "sensitive": []}', "not vaultdr's record"),
        ("{not json", "the kept Terraform outputs cannot be read"),
        (b"\xff\xfe{}", "the kept Terraform outputs cannot be read"),
    ],
)  # fmt: skip
def test_a_corrupt_kept_copy_is_bad_input_and_kube_values_writes_it_again(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    state = tmp_path / "state"
    fill(state, tmp_path)
    if isinstance(text, bytes):
        kept(state).write_bytes(text)
    else:
        kept(state).write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        eks_env(state)
    assert str(kept(state)) in err.value.message
    assert "vaultdr kube values --env eks --terraform-output FILE" in err.value.hint
    plan = vaultdr_cli("kube", "plan", "up", "--env", "eks", "--state-dir", str(state))
    assert plan.returncode == EXIT_BAD_INPUT and message in plan.stderr
    assert "Traceback" not in plan.stderr
    again = vaultdr_cli(
        "kube", "values", "--env", "eks", "--terraform-output", str(tf_file(tmp_path)),
        "--state-dir", str(state),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert eks_env(state).stack.cluster == OUTPUTS["cluster"]


def test_a_kept_copy_with_a_bad_value_is_refused_as_fresh_outputs_are(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fill(state, tmp_path)
    record = json.loads(kept(state).read_text())
    record["values"]["seal_role_arn"] = "vaultdr-seal"
    kept(state).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="output seal_role_arn is 'vaultdr-seal', which is not"):
        eks_env(state)


def test_a_values_template_that_cannot_be_read_is_bad_input_naming_it(tmp_path: Path) -> None:
    binary = tmp_path / "binary-values.yaml"
    binary.write_bytes(b"server: \xff\xfe\n")
    unreadable = tmp_path / "unreadable-values.yaml"
    unreadable.write_text("server: {}\n")
    unreadable.chmod(0)
    cases = [(tmp_path, "cannot be read"), (binary, "not a text file")]
    if not os.access(unreadable, os.R_OK):  # root reads any file
        cases.append((unreadable, "cannot be read"))
    for template, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            terraform.fill_values(
                engine_template=template,
                ops_template=EKS / "ops-values.yaml",
                stack=load_stack(EKS / "stack.yaml"),
                outputs=terraform.parse_outputs(printed(OUTPUTS)),
            )
        assert str(template) in err.value.message and err.value.exit_code == EXIT_BAD_INPUT


def eks_elsewhere(state: Path, values: dict[str, Any] | None, **kube: Any) -> EksEnvironment:
    """An eks environment whose reviewer is in another namespace, with its own values file."""
    stack = load_stack(EKS / "stack.yaml")
    assert stack.kube is not None
    values_path = state.parent / "values.yaml"
    values_path.write_text(yaml.safe_dump(values or {}))
    stack = stack.model_copy(
        update={
            "kube": stack.kube.model_copy(update={"values": str(values_path), **kube}),
            "kubernetes": stack.kubernetes.model_copy(
                update={
                    "reviewer": stack.kubernetes.reviewer.model_copy(update={"namespace": "vault"})
                }
            ),
        }
    )
    return EksEnvironment(state, stack)


@pytest.mark.parametrize(
    ("values", "account"),
    [
        ({}, "prod-openbao"),  # the chart's fullname: the release, then the chart's name
        ({"fullnameOverride": "bao"}, "bao"),
        ({"server": {"serviceAccount": {"name": "seal-sa"}}}, "seal-sa"),
        ({"server": {"serviceAccount": {"create": False}}}, "default"),
        ({"server": {"serviceAccount": {"create": False, "name": "mine"}}}, "mine"),
    ],
)
def test_the_server_service_account_is_the_one_the_official_chart_names(
    tmp_path: Path, values: dict[str, Any], account: str
) -> None:
    env = eks_elsewhere(tmp_path / "state", values, release="prod")
    assert env.server_service_account() == (NS, account)


def test_a_server_service_account_that_is_not_a_mapping_is_bad_input(tmp_path: Path) -> None:
    env = eks_elsewhere(tmp_path / "state", {"server": {"serviceAccount": "openbao"}})
    with pytest.raises(ConfigError, match=r"server\.serviceAccount must be a mapping") as err:
        env.server_service_account()
    assert str(tmp_path / "values.yaml") in err.value.message


@pytest.mark.parametrize(
    ("values", "where"),
    [({"server": "openbao"}, "server must be a mapping, not str"),
     ({"server": {"image": "quay.io/openbao/openbao:2.6.2"}}, "server.image must be a mapping, not str")],
)  # fmt: skip
def test_a_server_image_that_is_not_a_mapping_is_bad_input_naming_the_file(
    tmp_path: Path, values: dict[str, Any], where: str
) -> None:
    env = eks_elsewhere(tmp_path / "state", values)
    with pytest.raises(ConfigError, match=where) as err:
        upgrade_kube.server_image(env, "2.6.3", "0.27.0")
    assert str(tmp_path / "values.yaml") in err.value.message
    fine = eks_elsewhere(tmp_path / "state", {"server": {"image": {"repository": "me/bao"}}})
    assert upgrade_kube.server_image(fine, "2.6.3", "0.27.0").image == "quay.io/me/bao:2.6.3"


# --- the nodes' TLS from cert-manager ----------------------------------------------------------------
CA_1 = "-----BEGIN CERTIFICATE-----\nfirst CA\n-----END CERTIFICATE-----\n"
CA_2 = "-----BEGIN CERTIFICATE-----\nrotated CA\n-----END CERTIFICATE-----\n"


def issued_secret(ca: str) -> dict[str, Any]:
    """The servers' Secret as cert-manager writes it: its annotations from
    cert-manager pkg/controller/certificates/issuing/internal/secret.go (CertificateNameKey,
    the issuer's name/kind/group), its label from the same file, the keys
    tls.crt/tls.key/ca.crt (pkg/apis/meta/v1/types.go TLSCAKey)."""
    data = {"ca.crt": ca, "tls.crt": "server cert", "tls.key": "server key"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": "openbao-tls",
            "namespace": NS,
            "uid": "5b0a1d5e-0000-4000-8000-000000000001",
            "resourceVersion": "7",
            "creationTimestamp": "2026-12-01T00:00:00Z",
            "labels": {"controller.cert-manager.io/fao": "true"},
            "annotations": {
                "cert-manager.io/certificate-name": "vaultdr-ops-server",
                "cert-manager.io/issuer-name": "vaultdr-ops-ca",
                "cert-manager.io/issuer-kind": "Issuer",
                "cert-manager.io/issuer-group": "cert-manager.io",
            },
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def kube_env_on(tmp_path: Path, kube_api: FakeKubeApi, **kube: Any) -> KindEnvironment:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    return KindEnvironment(tmp_path / "state", Stack(kube=Kube(**kube)), kubeconfig=str(kubeconfig))


def secret_writes(cluster: FakeCluster) -> list[tuple[str, str]]:
    return [(m, p) for m, p in cluster.mutations() if "/secrets" in p]


def test_a_secret_cert_manager_manages_is_never_overwritten_and_its_ca_is_used(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    cluster.put("secrets", NS, "openbao-tls", issued_secret(CA_1))
    env = kube_env_on(tmp_path, kube_api)  # tls_source: vaultdr, the default
    deploy.apply_tls_secret(env)
    assert secret_writes(cluster) == []
    assert cluster.secret_data("openbao-tls")["ca.crt"] == CA_1
    assert not (env.state_dir / "ca" / "ca-key.pem").exists()  # no CA of vaultdr's made
    assert env.ca_file().read_text() == CA_1


def test_a_secret_of_vaultdrs_own_is_replaced_by_up(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    cluster.add_secret("openbao-tls", {"ca.crt": CA_1, "tls.crt": "old", "tls.key": "old"})
    env = kube_env_on(tmp_path, kube_api)
    deploy.apply_tls_secret(env)
    assert secret_writes(cluster) == [("PUT", f"/api/v1/namespaces/{NS}/secrets/openbao-tls")]
    assert cluster.secret_data("openbao-tls")["ca.crt"] == (env.state_dir / "ca/ca.pem").read_text()
    assert env.ca_file() == env.state_dir / "ca/ca.pem"


def test_a_ca_rotated_by_cert_manager_is_read_again(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.put("secrets", NS, "openbao-tls", issued_secret(CA_1))
    env = kube_env_on(tmp_path, kube_api, tls_source="cert-manager")
    path = env.ca_file()
    assert path.read_text() == CA_1
    cluster.put("secrets", NS, "openbao-tls", issued_secret(CA_2))  # cert-manager renews
    assert env.ca_file().read_text() == CA_1  # within CA_REFRESH: no API read
    monkeypatch.setattr(kube_env, "CA_REFRESH", 0.0)
    assert env.ca_file() == path and path.read_text() == CA_2


def test_with_cert_manager_up_waits_for_the_issued_secret_and_writes_none(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    env = kube_env_on(tmp_path, kube_api, tls_source="cert-manager", timeout=1.5)
    with pytest.raises(
        EnvironmentStartError, match="cert-manager to issue secret vaultdr/openbao-tls"
    ):
        deploy.apply_tls_secret(env)
    cluster.add_secret("openbao-tls", {"ca.crt": CA_1})  # someone else's, not cert-manager's
    with pytest.raises(EnvironmentStartError, match="did not happen within 2 s"):
        deploy.apply_tls_secret(env)
    cluster.put("secrets", NS, "openbao-tls", issued_secret(CA_1))
    deploy.apply_tls_secret(env)
    assert secret_writes(cluster) == []
    assert deploy.tls_from_cert_manager(env)


def test_with_cert_manager_the_certificate_is_installed_before_the_servers(tmp_path: Path) -> None:
    env = KindEnvironment(tmp_path / "state", Stack(kube=Kube(tls_source="cert-manager")))
    commands = [step.argv for step in deploy.plan_up(env) if step.argv]
    installs = [c[3] for c in commands if c[:3] == ["helm", "upgrade", "--install"]]
    assert installs == ["vaultdr-ops", "openbao", "vaultdr-ops"]
    first, last = (c for c in commands if c[3:4] == ["vaultdr-ops"])
    assert "tls.certManager.enabled=true" in first and "tls.certManager.enabled=true" in last
    assert "snapshot.enabled=false,restore.enabled=false,configure.enabled=false" in first
    assert "--wait" not in first and "--wait" in last  # the agents need the servers up
    shown = [step.show() for step in deploy.plan_up(env)]
    assert not any(line.startswith("create secret") for line in shown)


# --- revoke-kms waits for the deny, on the real emulator ------------------------------------------------
@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[awsemu.AwsStack]:
    directory = tmp_path_factory.mktemp("moto")
    port = free_port()
    record = awsemu.start_moto(directory, port=port, log=directory / "moto.log")
    try:
        yield awsemu.bootstrap(
            awsemu.endpoint_url(port), "us-east-1", cluster="vaultdr-eks", bucket="snaps"
        )
    finally:
        stop_pid(record.pid, record.start_time, grace=5.0)


def test_revoke_returns_once_the_seal_itself_is_refused_and_at_once_when_already_denied(
    moto: awsemu.AwsStack,
) -> None:
    admin, seal = moto.admin_aws(), moto.seal_aws()
    blob = seal.encrypt(moto.kms_key_id, b"unseal me")
    try:
        common.revoke_kms(admin, moto.seal_user, seal=seal, key_id=moto.kms_key_id, timeout=10)
        with pytest.raises(AccessDenied):
            seal.decrypt(blob)
        # Already in force: the seal cannot even make its probe; nothing to wait for.
        common.revoke_kms(admin, moto.seal_user, seal=seal, key_id=moto.kms_key_id, timeout=0.1)
    finally:
        common.restore_kms(admin, moto.seal_user)
    assert seal.decrypt(blob) == b"unseal me"


def test_a_seal_refused_encrypt_without_the_revoke_policy_is_a_fault_and_changes_nothing(
    moto: awsemu.AwsStack,
) -> None:
    """The seal cannot make its probe, but not because of vaultdr's deny (another policy
    refuses it): revoke-kms cannot check the deny, so it attaches nothing."""
    admin, seal = moto.admin_aws(), moto.seal_aws()
    other = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "kms:Encrypt", "Resource": "*"}],
    }
    admin.put_user_policy(moto.seal_user, "someone-elses-deny", other)
    try:
        with pytest.raises(FaultError, match="although no vaultdr-revoke-kms policy"):
            common.revoke_kms(admin, moto.seal_user, seal=seal, key_id=moto.kms_key_id)
        assert not common.kms_revoked(admin, moto.seal_user)
    finally:
        admin.delete_user_policy(moto.seal_user, "someone-elses-deny")


class FlappingSeal:
    """The seal as an eventually consistent IAM answers it: refused, then allowed once
    (another endpoint has not seen the deny yet), then refused. moto applies a policy at
    once, so this is the one behaviour here that has no real part to run against."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.calls = 0

    def decrypt(self, blob: bytes) -> bytes:
        refused = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if refused:
            raise AccessDenied("kms:Decrypt refused")
        return b"plaintext"


def test_the_deny_counts_as_in_force_only_after_refusals_in_a_row() -> None:
    seal = FlappingSeal([True, False, True, True, True])
    common.wait_until_denied(seal, b"blob", what="the seal", timeout=10, interval=0.01)  # type: ignore[arg-type]
    assert seal.calls == 2 + common.DENIED_IN_A_ROW  # the one allowed answer reset the count
