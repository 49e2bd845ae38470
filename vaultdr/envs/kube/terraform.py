"""EKS chart values filled from Terraform's outputs: ``terraform output -json`` in, the
filled values files and the outputs themselves out, into the state directory.

``environments/eks/terraform`` creates the AWS side (the seal and snapshot KMS keys, the
snapshot bucket, one IRSA role per service account, the ECR repository). Its outputs
(``outputs.tf``) are what the charts' values need; the shipped values files
(``environments/eks/*-values.yaml``) name each one as a placeholder
``REPLACE_WITH_TERRAFORM_OUTPUT_<name>``. :func:`fill_values` replaces every placeholder
by its output and sets what the environment depends on whatever the template says: the
seal role's IRSA annotation on the server's service account, each agent's role, the
region, the agent image (``kube.image``, else ``<ecr_repository_url>:<vaultdr version>``)
and the stack's Terraform facts (:func:`overlay_stack`: cluster, region, bucket, prefix,
the seal key, the snapshot key, the seal role). :func:`write_filled` keeps the result in
``<state dir>/eks-values/``; ``vaultdr up --env eks`` then installs those files instead
of the templates, and the eks environment reads its stack's Terraform facts from there
(revoke-kms denies the seal role; snapshots use the snapshot key).

Bad input is a :class:`~vaultdr.errors.ConfigError` (exit 2) naming the output: one
missing, not a string, empty, or not shaped as it must be (an IAM role ARN, a KMS key
ARN, a region), and a placeholder naming no output.

Nothing here is secret: ARNs, key ids, a bucket name, an image. An output Terraform marks
``sensitive`` is never printed.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from vaultdr import __version__, statedir
from vaultdr.config import Stack, parse_stack
from vaultdr.errors import ConfigError

#: The directory of the state directory the filled values are kept in.
FILLED_DIR = "eks-values"
OUTPUTS_FILE = "terraform-outputs.json"
PLACEHOLDER = re.compile(r"REPLACE_WITH_TERRAFORM_OUTPUT_([A-Za-z0-9_]+)")
#: The annotation IRSA's webhook reads on a service account.
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
AGENTS = ("snapshot", "restore", "configure")

_ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$"
_KMS_KEY_ARN = r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$"
#: Every output vaultdr uses (environments/eks/terraform/outputs.tf), and the shape its
#: value must have (None: any non-empty string; "" allowed only for the ECR repository,
#: which Terraform leaves empty with create_ecr_repository = false).
REQUIRED: dict[str, str | None] = {
    "region": r"^[a-z]{2}(-[a-z]+)+-[0-9]+$",
    "cluster": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "namespace": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "seal_kms_key_id": None,
    "seal_kms_key_arn": _KMS_KEY_ARN,
    "snapshots_kms_key_arn": _KMS_KEY_ARN,
    "snapshot_bucket": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    "snapshot_prefix": None,
    "seal_role_arn": _ROLE_ARN,
    "snapshot_role_arn": _ROLE_ARN,
    "restore_role_arn": _ROLE_ARN,
    "configure_role_arn": _ROLE_ARN,
    "ecr_repository_url": r"^$|^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+$",
}
_HINT = (
    "pass what `terraform -chdir=environments/eks/terraform output -json` prints "
    "(a file, or - for standard input), after `terraform apply`"
)
_KEPT_HINT = (
    "write it again from Terraform: vaultdr kube values --env eks --terraform-output FILE "
    "(FILE: `terraform -chdir=environments/eks/terraform output -json`, - for stdin)"
)
#: The stack field each output sets (:func:`overlay_stack`), to name the output at fault.
STACK_FIELDS: dict[tuple[str, ...], str] = {
    ("cluster",): "cluster",
    ("region",): "region",
    ("snapshots", "bucket"): "snapshot_bucket",
    ("snapshots", "prefix"): "snapshot_prefix",
    ("kube", "kms_key_id"): "seal_kms_key_arn",
    ("kube", "snapshot_kms_key_id"): "snapshots_kms_key_arn",
    ("kube", "seal_principal"): "seal_role_arn",
    ("kube", "image"): "ecr_repository_url",
}


@dataclass(frozen=True)
class TerraformOutputs:
    """The string outputs of one ``terraform output -json``; ``sensitive`` names those
    never to be printed."""

    values: dict[str, str]
    sensitive: frozenset[str] = frozenset()
    #: Where they were read: a file, standard input, the kept copy.
    source: str = "terraform output"

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def shown(self, name: str) -> str:
        return "(sensitive)" if name in self.sensitive else self.values[name]


@dataclass(frozen=True)
class FilledValues:
    """The official chart's values, the ops chart's values and the agent image."""

    engine: dict[str, Any]
    ops: dict[str, Any]
    image: str
    outputs: TerraformOutputs


# --- reading -------------------------------------------------------------------------------
def read_outputs(source: str, *, stdin: TextIO | None = None) -> TerraformOutputs:
    """``terraform output -json`` from the file ``source`` (``-``: standard input), checked."""
    if source == "-":
        text, where = (stdin or sys.stdin).read(), "standard input"
    else:
        where = source
        try:
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file", hint=_HINT) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot be read ({exc})", hint=_HINT) from None
    return parse_outputs(text, source=where)


def parse_outputs(text: str, *, source: str = "terraform output") -> TerraformOutputs:
    """Check ``terraform output -json``'s mapping ``name -> {value, type, sensitive}``.

    A ``snapshot_prefix`` ending in one ``/`` (``snapshots/``, as S3 consoles write
    prefixes) loses it: stack.yaml's ``snapshots.prefix`` is the prefix without one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: not JSON ({exc})", hint=_HINT) from None
    return check_outputs(data, source=source)


def check_outputs(data: Any, *, source: str) -> TerraformOutputs:
    """:func:`parse_outputs` of JSON already decoded."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: not a mapping of outputs (got {type(data).__name__})", hint=_HINT
        )
    values: dict[str, str] = {}
    sensitive: set[str] = set()
    for name, entry in data.items():
        if not isinstance(entry, dict) or "value" not in entry:
            if name in REQUIRED:
                raise ConfigError(
                    f"{source}: output {name} has no value (expected {{'value': ...}})",
                    hint=_HINT,
                )
            continue
        if entry.get("sensitive") is True:
            sensitive.add(str(name))
        if isinstance(entry["value"], str):
            values[str(name)] = entry["value"]
        elif name in REQUIRED:
            raise ConfigError(
                f"{source}: output {name} is {_type_name(entry['value'])}, not a string",
                hint=_HINT,
            )
    if values.get("snapshot_prefix", "").endswith("/"):
        values["snapshot_prefix"] = values["snapshot_prefix"].removesuffix("/")
    missing = [name for name in REQUIRED if name not in values]
    if missing:
        raise ConfigError(
            f"{source}: missing output{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
            hint=_HINT + " (environments/eks/terraform/outputs.tf defines them)",
        )
    for name, pattern in REQUIRED.items():
        value = values[name]
        if not value and name != "ecr_repository_url":
            raise ConfigError(f"{source}: output {name} is empty", hint=_HINT)
        if pattern and not re.match(pattern, value):
            shown = "(sensitive)" if name in sensitive else repr(value)
            raise ConfigError(
                f"{source}: output {name} is {shown}, which is not {_shape(name)}", hint=_HINT
            )
    return TerraformOutputs(values, frozenset(sensitive), source)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", bool: "a bool"}.get(type(value), "a number")


def _shape(name: str) -> str:
    if name.endswith("_role_arn"):
        return "an IAM role ARN"
    if name.endswith("_key_arn"):
        return "a KMS key ARN"
    if name == "ecr_repository_url":
        return "an ECR repository URL (or empty)"
    return {"region": "an AWS region", "snapshot_bucket": "an S3 bucket name"}.get(
        name, "a DNS label"
    )


# --- filling ---------------------------------------------------------------------------------
def fill_placeholders(node: Any, outputs: TerraformOutputs, *, source: str) -> Any:
    """``node`` with every ``REPLACE_WITH_TERRAFORM_OUTPUT_<name>`` replaced by that output."""
    if isinstance(node, dict):
        return {k: fill_placeholders(v, outputs, source=source) for k, v in node.items()}
    if isinstance(node, list):
        return [fill_placeholders(v, outputs, source=source) for v in node]
    if not isinstance(node, str):
        return node

    def output(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in outputs.values:
            raise ConfigError(
                f"{source}: placeholder {match.group(0)} names output {name}, which "
                "terraform output does not have",
                hint="fix the placeholder, or add the output to environments/eks/terraform",
            )
        return outputs[name]

    return PLACEHOLDER.sub(output, node)


def agent_image(outputs: TerraformOutputs, image: str | None, *, version: str = __version__) -> str:
    """``kube.image`` when stack.yaml sets one, else the ECR repository at this version."""
    if image:
        return image
    if not outputs["ecr_repository_url"]:
        raise ConfigError(
            "output ecr_repository_url is empty (create_ecr_repository = false) and "
            "stack.yaml sets no kube.image: no agent image to run",
            hint="set kube.image to the image you pushed, e.g. REGISTRY/vaultdr:" + version,
        )
    return f"{outputs['ecr_repository_url']}:{version}"


def overlay_stack(data: dict[str, Any], outputs: TerraformOutputs, *, image: str) -> dict[str, Any]:
    """A stack mapping with Terraform's facts: they name the real resources (the IAM
    policies and the SSM path are scoped to that cluster, bucket and prefix), so they win
    over stack.yaml, except an image stack.yaml names."""
    stack = dict(data)
    stack["cluster"], stack["region"] = outputs["cluster"], outputs["region"]
    snapshots = dict(stack.get("snapshots") or {})
    snapshots["bucket"], snapshots["prefix"] = (
        outputs["snapshot_bucket"],
        outputs["snapshot_prefix"],
    )
    stack["snapshots"] = snapshots
    kube = dict(stack.get("kube") or {})
    kube.update(
        kms_key_id=outputs["seal_kms_key_arn"],
        snapshot_kms_key_id=outputs["snapshots_kms_key_arn"],
        seal_principal=outputs["seal_role_arn"],
        image=image,
    )
    stack["kube"] = kube
    return stack


def apply_outputs(stack: Stack, outputs: TerraformOutputs) -> Stack:
    """``stack`` with :func:`overlay_stack`'s facts; the namespace must be the roles'."""
    kube = stack.kube
    namespace = kube.namespace if kube else "vaultdr"
    if outputs["namespace"] != namespace:
        raise ConfigError(
            f"terraform output namespace is {outputs['namespace']!r} but stack.yaml's "
            f"kube.namespace is {namespace!r}: the IRSA roles trust service accounts of "
            f"{outputs['namespace']!r} only",
            hint="set kube.namespace to Terraform's namespace (or var.namespace to stack.yaml's)",
        )
    image = agent_image(outputs, kube.image if kube else None)
    data = overlay_stack(stack.model_dump(mode="json", exclude_none=True), outputs, image=image)
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            name = STACK_FIELDS.get(tuple(str(part) for part in err["loc"]))
            if name is None:
                continue
            field = ".".join(str(part) for part in err["loc"])
            value = outputs.shown(name) if name in outputs.values else "(not set)"
            shown = value if value == "(sensitive)" else repr(value)
            raise ConfigError(
                f"{outputs.source}: output {name} is {shown}, which stack.yaml's {field} "
                f"does not accept: {err['msg'].removeprefix('Value error, ')}",
                hint="fix the Terraform variable behind it and `terraform apply`, then "
                "pass the new `terraform output -json`",
            ) from None
    # Not a field an output sets: parse_stack names it.
    return parse_stack(data, source=f"stack.yaml with {outputs.source}'s facts")


def fill_values(
    *, engine_template: Path, ops_template: Path, stack: Stack, outputs: TerraformOutputs
) -> FilledValues:
    """The templates with every placeholder filled and the Terraform facts set."""
    filled = apply_outputs(stack, outputs)
    assert filled.kube is not None and filled.kube.image  # set by apply_outputs
    image = filled.kube.image
    engine = _mapping(
        fill_placeholders(_load(engine_template), outputs, source=str(engine_template)),
        engine_template,
    )
    server = _child(engine, "server")
    sa = _child(server, "serviceAccount")
    _child(sa, "annotations")[IRSA_ANNOTATION] = outputs["seal_role_arn"]
    ops = _mapping(
        fill_placeholders(_load(ops_template), outputs, source=str(ops_template)), ops_template
    )
    repository, _, tag = image.rpartition(":")
    _child(ops, "image").update(repository=repository, tag=tag)
    _child(ops, "aws")["region"] = outputs["region"]
    accounts = _child(ops, "serviceAccounts")
    for agent in AGENTS:
        _child(accounts, agent)["roleArn"] = outputs[f"{agent}_role_arn"]
    ops["stack"] = overlay_stack(_child(ops, "stack"), outputs, image=image)
    return FilledValues(engine=engine, ops=ops, image=image, outputs=outputs)


def _load(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such values file", hint="check kube.values/ops_values"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8)",
            hint="kube.values/ops_values must name YAML values files",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot be read ({exc.strerror or type(exc).__name__})",
            hint="kube.values/ops_values must name readable YAML values files",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def _mapping(data: Any, path: Path) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a values file must be a mapping")
    return data


def _child(parent: dict[str, Any], key: str) -> dict[str, Any]:
    found = parent.get(key)
    if not isinstance(found, dict):
        found = parent[key] = {}
    return found


# --- the state directory -----------------------------------------------------------------------
def filled_dir(state_dir: Path) -> Path:
    return state_dir / FILLED_DIR


def engine_values_path(state_dir: Path, engine_kind: str) -> Path:
    return filled_dir(state_dir) / f"{engine_kind}-values.yaml"


def ops_values_path(state_dir: Path) -> Path:
    return filled_dir(state_dir) / "ops-values.yaml"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the server's HCL config) as literal blocks, readable as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


_HEADER = (
    "# Written by vaultdr from `terraform output -json` ({source}); do not edit:\n"
    "# `vaultdr kube values --env eks --terraform-output FILE` writes it again.\n"
)


def write_filled(
    state_dir: Path, filled: FilledValues, *, engine_kind: str, source: str
) -> list[Path]:
    """Keep the filled values and the outputs in ``<state dir>/eks-values/``; the paths."""
    statedir.claim(state_dir, what="state directory", purpose="eks stack")
    directory = filled_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    header = _HEADER.format(source=source)
    engine, ops = engine_values_path(state_dir, engine_kind), ops_values_path(state_dir)
    engine.write_text(header + _dump(filled.engine))
    ops.write_text(header + _dump(filled.ops))
    outputs = directory / OUTPUTS_FILE
    record = {"values": filled.outputs.values, "sensitive": sorted(filled.outputs.sensitive)}
    outputs.write_text(json.dumps(record, indent=2) + "\n")
    outputs.chmod(0o600)
    return [engine, ops, outputs]


def read_filled_outputs(state_dir: Path) -> TerraformOutputs | None:
    """The outputs :func:`write_filled` kept, or None when there are none."""
    """The outputs :func:`write_filled` kept, or None when there are none; checked as
    fresh ones are (:func:`check_outputs`), a bad copy a ConfigError saying how to
    write it again."""
    path = filled_dir(state_dir) / OUTPUTS_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigError(
            f"{path}: the kept Terraform outputs cannot be read ({reason})", hint=_KEPT_HINT
        ) from None
    values = record.get("values") if isinstance(record, dict) else None
    sensitive = record.get("sensitive", []) if isinstance(record, dict) else None
    if (
        not isinstance(values, dict)
        or not isinstance(sensitive, list)
        or not all(isinstance(s, str) for s in sensitive)
    ):
        raise ConfigError(
            f"{path}: the kept Terraform outputs are not vaultdr's record "
            '({"values": {output: string}, "sensitive": [output]})',
            hint=_KEPT_HINT,
        )
    data = {
        name: {"value": value, "sensitive": name in sensitive} for name, value in values.items()
    }
    try:
        return check_outputs(data, source=f"{path} (the kept Terraform outputs)")
    except ConfigError as exc:
        raise ConfigError(exc.message, hint=_KEPT_HINT) from None


def describe(outputs: TerraformOutputs, *, image: str, engine_kind: str) -> list[str]:
    """What was filled, one line each (for ``kube values`` and ``up --dry-run``)."""
    o = outputs
    return [
        f"{engine_kind} values: seal key {o.shown('seal_kms_key_id')} in {o.shown('region')}; "
        f"server service account {IRSA_ANNOTATION}={o.shown('seal_role_arn')}",
        f"ops values: image {image}; roles snapshot={o.shown('snapshot_role_arn')} "
        f"restore={o.shown('restore_role_arn')} configure={o.shown('configure_role_arn')}",
        f"stack: cluster {o.shown('cluster')}, bucket {o.shown('snapshot_bucket')}/"
        f"{o.shown('snapshot_prefix')}, snapshot key {o.shown('snapshots_kms_key_arn')}, "
        f"seal principal {o.shown('seal_role_arn')}",
    ]
