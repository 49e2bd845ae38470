"""``vaultdr up`` and ``down`` for ``--env kind`` and ``--env eks``: a plan of steps, then its run.

:func:`plan_up` lists every step as data (a command line for the ``kind``,
``docker`` and ``helm`` CLIs, or a named Kubernetes/Vault API action), so a dry
run prints exactly what would happen and tests assert the command lines without
running them. :func:`deploy` checks the tools, then runs the plan:

kind: create the kind cluster unless it exists (recorded, so ``down`` deletes it
only if vaultdr created it); ``docker build`` the agent image and ``kind load``
it; create the namespace and the nodes' TLS Secret (a CA generated into the state
directory); create the namespaces and service accounts stack.yaml declares (only in
namespaces vaultdr owns: one it creates carries the ``vaultdr.io/owner`` annotation;
in anyone else's a missing account is an error and nothing is created; the release
namespace's accounts are left to the charts and checked after them); apply the in-cluster AWS emulator and wait for its bootstrap Secrets;
``helm upgrade --install`` the official chart; initialize with recovery keys (the
root token and recovery keys go to SSM, never printed); apply the configuration;
``helm upgrade --install`` the ops chart (snapshot agent, restore watcher,
configure Job); wait until every node is unsealed and a voter and one is active.

eks: the same on the current kube context (which must be ``kube.context`` when
set), with real AWS, an image from a registry and no cluster creation.

Every wait is bounded by ``kube.timeout``.

Hazard: ``down`` on eks uninstalls the releases and (without ``--keep-data``)
deletes the nodes' PVCs: it is refused without the same confirmation as a
destructive fault.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from vaultdr import __version__
from vaultdr.agents.configure import Change
from vaultdr.aws import Aws
from vaultdr.config import Kube, Stack, load_stack
from vaultdr.envs.base import StackStatus, initialize_cluster
from vaultdr.envs.kube import terraform
from vaultdr.envs.kube.api import KubeApi
from vaultdr.envs.tls import LocalCA
from vaultdr.errors import (
    ConfigError,
    EnvironmentStartError,
    StackStateError,
    ToolMissing,
    VaultdrError,
)
from vaultdr.polling import wait_for
from vaultdr.vault import VaultClient

REPO_ROOT = Path(__file__).resolve().parents[3]
STATE_FILE = "kube.json"
AGENT_IMAGE = "vaultdr-agent"
#: The ops chart's agents (each has ``<agent>.enabled``).
OPS_AGENTS = ("snapshot", "restore", "configure")
#: The annotation cert-manager puts on every Secret it issues for a Certificate
#: (cert-manager pkg/apis/certmanager/v1/types.go CertificateNameKey, set in
#: pkg/controller/certificates/issuing/internal/secret.go).
CERT_MANAGER_CERTIFICATE = "cert-manager.io/certificate-name"

TOOL_HINTS = {
    "kind": "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation "
    "(e.g. `go install sigs.k8s.io/kind@latest`)",
    "docker": "install Docker (https://docs.docker.com/engine/install/) and start it",
    "helm": "install Helm 3: https://helm.sh/docs/intro/install/",
}


class DeployTarget(Protocol):
    """What ``up``/``down`` need of the environment (:class:`~vaultdr.envs.kube.env.KubeEnvironment`).

    A protocol, so that ``env.py`` imports this module and not the other way round.
    """

    name: str
    stack: Stack
    stack_file: str
    state_dir: Path
    kube: Kube
    dry_run: bool

    @property
    def api(self) -> KubeApi: ...

    @property
    def namespace(self) -> str: ...

    def current_context(self) -> str | None: ...

    def node_names(self) -> list[str]: ...

    def pvc_name(self, node: str) -> str: ...

    def client(self, node: str | None = None, *, token: str | None = None) -> VaultClient: ...

    def aws(self, principal: str = "admin") -> Aws: ...

    def configure(self, *, dry_run: bool = False) -> list[Change]: ...

    def status(self, *, quick: bool = False) -> StackStatus: ...

    def check_destructive(self, fault: str) -> None: ...


def required_tools(env_name: str) -> list[str]:
    """The CLIs ``up``/``down`` run for ``env_name``."""
    return ["kind", "docker", "helm"] if env_name == "kind" else ["helm"]


def check_tools(tools: list[str], *, path: str | None = None) -> None:
    """Raise naming every tool missing from PATH, and how to install it."""
    missing = [tool for tool in tools if shutil.which(tool, path=path) is None]
    if missing:
        raise ToolMissing(
            f"missing on PATH: {', '.join(missing)} (needed by `vaultdr up`/`down` here)",
            hint="; ".join(TOOL_HINTS[tool] for tool in missing),
        )


@dataclass(frozen=True)
class Step:
    """One step of ``up``/``down``: a command line, or an API action described in words."""

    description: str
    argv: list[str] | None = None
    action: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    unless: Callable[[], bool] | None = field(default=None, compare=False, repr=False)

    def show(self) -> str:
        return shlex.join(self.argv) if self.argv else self.description


# --- paths and names ------------------------------------------------------------------------
def stack_dir(env: DeployTarget) -> Path:
    if env.stack_file:
        return Path(env.stack_file).resolve().parent
    return REPO_ROOT / "environments" / env.name


def resolve(env: DeployTarget, value: str) -> str:
    """A path from stack.yaml: absolute as is, else relative to the stack file's directory."""
    path = Path(value)
    return str(path if path.is_absolute() else (stack_dir(env) / path).resolve())


def template_values_file(env: DeployTarget) -> str:
    """The official chart's values as stack.yaml names them (on eks: with placeholders)."""
    return resolve(env, env.kube.values or f"{env.stack.engine.kind}-values.yaml")


def template_ops_values_file(env: DeployTarget) -> str:
    """The ops chart's values as stack.yaml names them (on eks: with placeholders)."""
    return resolve(env, env.kube.ops_values or "ops-values.yaml")


def values_file(env: DeployTarget) -> str:
    """The official chart's values ``up`` installs: on eks the ones filled from Terraform's
    outputs (``vaultdr kube values``) when there are some, else stack.yaml's."""
    filled = terraform.engine_values_path(env.state_dir, env.stack.engine.kind)
    if env.name == "eks" and filled.exists():
        return str(filled)
    return template_values_file(env)


def ops_values_file(env: DeployTarget) -> str:
    """The ops chart's values ``up`` installs (filled on eks as :func:`values_file`)."""
    filled = terraform.ops_values_path(env.state_dir)
    if env.name == "eks" and filled.exists():
        return str(filled)
    return template_ops_values_file(env)


def fill_values_from_terraform(env: DeployTarget, source: str) -> list[str]:
    """Fill the eks values from ``terraform output -json`` (a file, ``-``: stdin) into the
    state directory (see :mod:`vaultdr.envs.kube.terraform`); what was filled, per line.

    Later ``up``/``down`` and every command of this environment use them."""
    if env.name != "eks":
        raise ConfigError(
            f"Terraform outputs are for --env eks, not --env {env.name}",
            hint="kind's values are complete as shipped",
        )
    outputs = terraform.read_outputs(source)
    # The stack as written, not as earlier outputs overlaid it (their image, say).
    declared = load_stack(env.stack_file) if env.stack_file else env.stack
    filled = terraform.fill_values(
        engine_template=Path(template_values_file(env)),
        ops_template=Path(template_ops_values_file(env)),
        stack=declared,
        outputs=outputs,
    )
    shown = "standard input" if source == "-" else source
    paths = terraform.write_filled(
        env.state_dir, filled, engine_kind=env.stack.engine.kind, source=shown
    )
    lines = terraform.describe(outputs, image=filled.image, engine_kind=env.stack.engine.kind)
    return [*lines, *(f"wrote {path}" for path in paths)]


def check_values_filled(env: DeployTarget) -> None:
    """Refuse (exit 2) to install values files that still hold Terraform placeholders."""
    for path in (values_file(env), ops_values_file(env)):
        try:
            found = terraform.PLACEHOLDER.findall(Path(path).read_text(encoding="utf-8"))
        except OSError:
            continue  # helm names a missing file itself
        if found:
            raise ConfigError(
                f"{path} still holds Terraform placeholders ({', '.join(sorted(set(found)))})",
                hint="fill them from Terraform: vaultdr kube values --env eks "
                "--terraform-output FILE (FILE: `terraform output -json`, - for stdin)",
            )


def stack_values_file(env: DeployTarget) -> Path:
    """The stack file as the ops chart's ``stack`` value (written by ``up``)."""
    return env.state_dir / "ops-stack-values.yaml"


def write_stack_values(env: DeployTarget) -> None:
    data = env.stack.model_dump(mode="json", exclude_none=True)
    if env.stack_file and Path(env.stack_file).exists():
        data = yaml.safe_load(Path(env.stack_file).read_text()) or {}
        outputs = terraform.read_filled_outputs(env.state_dir) if env.name == "eks" else None
        if outputs is not None and env.kube.image:  # the stack's Terraform facts
            data = terraform.overlay_stack(data, outputs, image=env.kube.image)
    env.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stack_values_file(env).write_text(yaml.safe_dump({"stack": data}, sort_keys=False))


def official_fullname(
    release: str, chart_name: str, *, fullname_override: str = "", name_override: str = ""
) -> str:
    """The official chart's ``fullname``: its StatefulSet, ``<fullname>-internal`` and
    ``<fullname>-active`` services, and pods ``<fullname>-N`` with PVCs ``data-<fullname>-N``.

    As ``openbao.fullname`` (openbao-helm chart 0.27.0, charts/openbao/templates/_helpers.tpl)
    and ``vault.fullname`` (vault-helm v0.30.1, templates/_helpers.tpl) define it: the
    ``fullnameOverride``; else the release name if it contains the chart name (or the
    ``nameOverride``); else ``<release>-<name>``; truncated to 63 characters and one
    trailing "-" trimmed (sprig ``trunc 63 | trimSuffix "-"``)."""

    def trimmed(value: str) -> str:
        value = value[:63]
        return value[:-1] if value.endswith("-") else value

    if fullname_override:
        return trimmed(fullname_override)
    name = name_override or chart_name
    return trimmed(release if name in release else f"{release}-{name}")


def chart_name(env: DeployTarget) -> str:
    """The official chart's name: the last part of ``kube.chart`` (``openbao/openbao``)."""
    return env.kube.chart.rstrip("/").rsplit("/", 1)[-1].split(":", 1)[0]


def chart_fullname(env: DeployTarget) -> str:
    """:func:`official_fullname` of ``kube.release``, with the ``fullnameOverride`` and
    ``nameOverride`` the engine's values file sets (the one ``up`` installs the chart with)."""
    overrides: dict[str, Any] = {}
    path = Path(values_file(env))
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"cannot read the chart values {path} ({type(exc).__name__})",
                hint="fix the YAML of kube.values, or point kube.values at the right file",
            ) from None
        overrides = loaded if isinstance(loaded, dict) else {}
    return official_fullname(
        env.kube.release,
        chart_name(env),
        fullname_override=str(overrides.get("fullnameOverride") or ""),
        name_override=str(overrides.get("nameOverride") or ""),
    )


def agent_image(env: DeployTarget) -> str:
    return env.kube.image or f"{AGENT_IMAGE}:{__version__}"


def repo_alias(env: DeployTarget) -> str:
    return env.kube.chart.split("/", 1)[0]


# --- command lines ----------------------------------------------------------------------------
def kind_create_cluster(env: DeployTarget) -> list[str]:
    return [
        "kind",
        "create",
        "cluster",
        "--name",
        env.kube.kind_cluster,
        "--config",
        resolve(env, env.kube.kind_config),
        "--wait",
        "120s",
    ]


def docker_build(env: DeployTarget) -> list[str]:
    dockerfile = str(REPO_ROOT / "Dockerfile")
    return ["docker", "build", "--tag", agent_image(env), "--file", dockerfile, str(REPO_ROOT)]


def kind_load(env: DeployTarget) -> list[str]:
    return ["kind", "load", "docker-image", agent_image(env), "--name", env.kube.kind_cluster]


def kind_delete_cluster(env: DeployTarget) -> list[str]:
    return ["kind", "delete", "cluster", "--name", env.kube.kind_cluster]


def _context_args(env: DeployTarget) -> list[str]:
    return ["--kube-context", env.kube.context] if env.kube.context else []


def helm_repo_add(env: DeployTarget) -> list[str]:
    return ["helm", "repo", "add", repo_alias(env), env.kube.chart_repo, "--force-update"]


def helm_install_engine(env: DeployTarget) -> list[str]:
    """The official chart. No --wait: its pods are ready only once initialized."""
    return [
        "helm",
        "upgrade",
        "--install",
        env.kube.release,
        env.kube.chart,
        "--version",
        env.kube.chart_version,
        "--namespace",
        env.namespace,
        "--values",
        values_file(env),
        *_context_args(env),
    ]


def helm_install_ops(env: DeployTarget, *, tls_only: bool = False) -> list[str]:
    """The ops chart with the stack file and the agent image.

    The image is set on the command line on kind (the one ``up`` builds and loads) and
    wherever stack.yaml (or Terraform's ECR output, on eks) names one; otherwise the
    values file's image stands. ``vault.release`` is the official chart's fullname (which
    names the StatefulSet and the services the agents address), derived as the chart does,
    so a release not named after the chart needs no hand edit. With cert-manager TLS the chart's Certificate is on;
    ``tls_only`` installs the release with every agent off, before the servers start, so
    that cert-manager issues their Secret first (the agents need the cluster up)."""
    settings: list[str] = [f"vault.release={chart_fullname(env)}"]
    if env.name == "kind" or env.kube.image:
        repository, _, tag = agent_image(env).rpartition(":")
        settings.append(f"image.repository={repository},image.tag={tag}")
    if env.kube.tls_source == "cert-manager":
        settings.append("tls.certManager.enabled=true")
    if tls_only:
        settings.append(",".join(f"{agent}.enabled=false" for agent in OPS_AGENTS))
    wait = [] if tls_only else ["--wait", "--timeout", f"{int(env.kube.timeout)}s"]
    return [
        "helm",
        "upgrade",
        "--install",
        env.kube.ops_release,
        resolve(env, env.kube.ops_chart),
        "--namespace",
        env.namespace,
        "--values",
        ops_values_file(env),
        "--values",
        str(stack_values_file(env)),
        *(arg for setting in settings for arg in ("--set", setting)),
        *wait,
        *_context_args(env),
    ]


def helm_uninstall(env: DeployTarget, release: str) -> list[str]:
    return [
        "helm",
        "uninstall",
        release,
        "--namespace",
        env.namespace,
        "--ignore-not-found",
        *_context_args(env),
    ]


# --- plans --------------------------------------------------------------------------------------
def plan_up(env: DeployTarget) -> list[Step]:
    """Every step of ``vaultdr up`` for ``env``, in order."""
    ns = env.namespace
    steps: list[Step] = []
    if env.name == "kind":
        steps += [
            Step(
                f"create kind cluster {env.kube.kind_cluster} (unless it exists)",
                kind_create_cluster(env),
                unless=lambda: kind_cluster_exists(env),
            ),
            Step("build the agent image", docker_build(env)),
            Step("load the agent image into kind", kind_load(env)),
        ]
    outputs = terraform.read_filled_outputs(env.state_dir) if env.name == "eks" else None
    if outputs is not None:
        filled = terraform.describe(
            outputs, image=agent_image(env), engine_kind=env.stack.engine.kind
        )
        steps.append(Step(f"use the values filled from Terraform's outputs: {'; '.join(filled)}"))
    steps += [
        Step(f"create namespace {ns} (unless it exists)", action=lambda: ensure_namespace(env)),
        Step(
            f"create the namespaces and service accounts stack.yaml declares outside {ns} "
            "(only in namespaces vaultdr owns)",
            action=lambda: ensure_service_accounts(env, release_namespace=False),
        ),
        *tls_steps(env),
    ]
    if env.name == "kind":
        manifest = resolve(env, env.kube.aws_manifest or "aws-emulator.yaml")
        steps.append(
            Step(
                f"apply {manifest} (the AWS emulator) and wait for its credentials",
                action=lambda: apply_aws_emulator(env, manifest),
            )
        )
    steps += [
        Step("add the chart repository", helm_repo_add(env)),
        Step(f"install {env.kube.chart} as {env.kube.release}", helm_install_engine(env)),
        Step(
            "initialize (recovery keys and root token to SSM), unless initialized",
            action=lambda: initialize(env),
        ),
        Step("apply the configuration (stack.yaml configure)", action=lambda: configure(env)),
        Step(
            f"write {stack_values_file(env)} (the stack file as the ops chart's `stack`)",
            action=lambda: write_stack_values(env),
        ),
        Step(f"install the ops chart as {env.kube.ops_release}", helm_install_ops(env)),
        Step(
            f"create the service accounts stack.yaml declares in {ns} that no chart created",
            action=lambda: ensure_service_accounts(env, release_namespace=True),
        ),
        Step(
            "wait until every node is unsealed and a voter, one active",
            action=lambda: wait_healthy(env),
        ),
    ]
    return steps


def plan_down(env: DeployTarget, *, keep_data: bool = False) -> list[Step]:
    """Every step of ``vaultdr down``: only what ``up`` created."""
    record = read_record(env)
    if env.name == "kind" and record.get("created_cluster"):
        return [Step(f"delete kind cluster {env.kube.kind_cluster}", kind_delete_cluster(env))]
    steps = [
        Step(f"uninstall {env.kube.ops_release}", helm_uninstall(env, env.kube.ops_release)),
        Step(f"uninstall {env.kube.release}", helm_uninstall(env, env.kube.release)),
    ]
    if not keep_data:
        for node in env.node_names():
            claim = env.pvc_name(node)
            steps.append(
                Step(
                    f"delete pvc {env.namespace}/{claim}",
                    action=lambda claim=claim: env.api.delete_pvc(env.namespace, claim),  # type: ignore[misc]
                )
            )
    return steps + created_account_steps(env, record, keep_data=keep_data)


# --- running ------------------------------------------------------------------------------------
def run_command(argv: list[str], *, cwd: Path = REPO_ROOT) -> str:
    """Run one command line; its stdout. A failure names the command and shows its output's tail."""
    print(f"+ {shlex.join(argv)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise EnvironmentStartError(
            f"cannot run {argv[0]}: {exc.strerror or exc}", hint=TOOL_HINTS.get(argv[0], "")
        ) from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise EnvironmentStartError(
            f"`{shlex.join(argv)}` failed with exit status {done.returncode}:\n{tail}",
            hint="read the output above; `vaultdr up` can be run again once it is fixed",
        )
    return done.stdout


def run_plan(steps: list[Step], *, dry_run: bool = False) -> list[str]:
    """Run ``steps`` in order (or, with ``dry_run``, only list them); the lines shown."""
    shown: list[str] = []
    for step in steps:
        shown.append(step.show())
        if dry_run:
            continue
        if step.unless is not None and step.unless():
            continue
        if step.argv is not None:
            run_command(step.argv)
        elif step.action is not None:
            print(f"- {step.description}", file=sys.stderr, flush=True)
            step.action()
    return shown


def deploy(env: DeployTarget) -> None:
    """``vaultdr up``: check the tools and the context, then run :func:`plan_up`."""
    check_tools(required_tools(env.name))
    env.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if env.name == "eks":
        check_expected_context(env)
        check_values_filled(env)
    run_plan(plan_up(env), dry_run=env.dry_run)


def teardown(env: DeployTarget, *, keep_data: bool = False) -> None:
    """``vaultdr down``: uninstall (or delete the kind cluster) only what ``up`` created."""
    if env.name == "eks" and not env.dry_run:
        env.check_destructive("down")
    check_tools(["kind", "helm"] if env.name == "kind" else ["helm"])
    run_plan(plan_down(env, keep_data=keep_data), dry_run=env.dry_run)
    if not env.dry_run:
        # With --keep-data the namespaces stay: remember that up made them, so a later
        # full `down` still deletes them (and only them).
        record = read_record(env)
        kept = ("created_namespace", "created_namespaces") if keep_data else ()
        write_record(env, {k: record[k] for k in kept if k in record})


def check_expected_context(env: DeployTarget) -> None:
    expected, current = env.kube.context, env.current_context()
    if expected and current != expected:
        raise EnvironmentStartError(
            f"the kube context is {current!r}, but stack.yaml's kube.context is {expected!r}",
            hint=f"switch to it: kubectl config use-context {expected}",
        )


# --- the state record -----------------------------------------------------------------------------
def read_record(env: DeployTarget) -> dict[str, Any]:
    try:
        return dict(json.loads((env.state_dir / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def write_record(env: DeployTarget, record: dict[str, Any]) -> None:
    env.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (env.state_dir / STATE_FILE).write_text(json.dumps(record, indent=2) + "\n")


def update_record(env: DeployTarget, **changes: Any) -> None:
    write_record(env, {**read_record(env), **changes})


# --- the API steps ---------------------------------------------------------------------------------
def kind_cluster_exists(env: DeployTarget) -> bool:
    """``kind get clusters`` lists it; when it does not, ``up`` creates it and records that."""
    names = run_command(["kind", "get", "clusters"]).split()
    exists = env.kube.kind_cluster in names
    if not exists:
        update_record(env, created_cluster=True)
    return exists


def ensure_namespace(env: DeployTarget) -> None:
    """The release namespace, created (labelled and annotated as vaultdr's) unless it exists."""
    if env.api.read_namespace(env.namespace) is None:
        _create_owned_namespace(env, env.namespace)
        update_record(env, created_namespace=True)


# --- namespaces and service accounts stack.yaml declares ------------------------------------------
#: Marks a namespace as created by `vaultdr up` of the stack named in the value: only
#: there does vaultdr create service accounts, and only such a namespace does `down` delete.
OWNER_ANNOTATION = "vaultdr.io/owner"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "vaultdr"}


def _create_owned_namespace(env: DeployTarget, namespace: str) -> None:
    env.api.create_namespace(
        namespace,
        labels=MANAGED_LABELS,
        annotations={OWNER_ANNOTATION: env.stack.cluster},
    )


def owns_namespace(env: DeployTarget, namespace: str) -> bool:
    """Whether ``namespace`` exists and is this stack's (created by its `up`)."""
    info = env.api.read_namespace(namespace)
    return info is not None and info.annotations.get(OWNER_ANNOTATION) == env.stack.cluster


def declared_service_accounts(
    env: DeployTarget, *, release_namespace: bool
) -> dict[str, list[str]]:
    """stack.yaml's service accounts (kubernetes.reviewer, kubernetes.service_accounts,
    snapshots.service_account) by namespace: those in the release namespace, or the others.

    The release namespace's are the charts' own (the official chart's server account,
    the ops chart's agents), so `up` looks at them only after the charts are installed:
    creating one first would make ``helm install`` refuse it (not owned by the release)."""
    wanted: dict[str, list[str]] = {}
    for account in env.stack.all_service_accounts():
        if (account.namespace == env.namespace) == release_namespace:
            wanted.setdefault(account.namespace, []).append(account.name)
    return wanted


def ensure_service_accounts(env: DeployTarget, *, release_namespace: bool) -> None:
    """Create the declared namespaces and service accounts that are missing, where vaultdr
    may: a namespace that does not exist is created as vaultdr's; accounts are created only
    in namespaces vaultdr owns. In a namespace that exists and is not vaultdr's, a missing
    account is a :class:`StackStateError` naming every one, and nothing is created at all.

    Each creation is recorded at once (kube.json), so `down` deletes exactly what `up` made,
    even after a failed `up`."""
    api = env.api
    wanted = declared_service_accounts(env, release_namespace=release_namespace)
    infos = {ns: api.read_namespace(ns) for ns in wanted}
    foreign: list[str] = []
    for ns, names in wanted.items():
        info = infos[ns]
        if info is not None and info.phase == "Terminating":
            raise StackStateError(
                f"namespace {ns} (of stack.yaml's service accounts) is being deleted",
                hint=f"wait until it is gone (`kubectl get namespace {ns}`), then run `up` again",
            )
        if info is not None and info.annotations.get(OWNER_ANNOTATION) != env.stack.cluster:
            foreign += [f"{ns}/{n}" for n in names if not api.service_account_exists(ns, n)]
    if foreign:
        raise StackStateError(
            f"stack.yaml declares service account(s) {', '.join(foreign)}, missing in "
            "namespace(s) vaultdr did not create: vaultdr creates nothing there",
            hint="create them (`kubectl -n NAMESPACE create serviceaccount NAME`), or name a "
            "namespace that does not exist yet, which `up` then creates as vaultdr's",
        )
    for ns, names in wanted.items():
        info = infos[ns]
        if info is None:
            _create_owned_namespace(env, ns)
            _record_created(env, "created_namespaces", ns)
        elif info.annotations.get(OWNER_ANNOTATION) != env.stack.cluster:
            continue
        for name in names:
            if info is None or not api.service_account_exists(ns, name):
                api.create_service_account(ns, name, labels=MANAGED_LABELS)
                _record_created(env, "created_service_accounts", f"{ns}/{name}")


def _record_created(env: DeployTarget, key: str, item: str) -> None:
    items = list(read_record(env).get(key) or [])
    if item not in items:
        update_record(env, **{key: [*items, item]})


def created_account_steps(
    env: DeployTarget, record: dict[str, Any], *, keep_data: bool
) -> list[Step]:
    """`down`'s steps for what `up` created beyond the releases: its service accounts
    (unless their namespace goes too), then its namespaces, each checked, when deleted,
    to be vaultdr's and to hold nothing vaultdr did not put there. With ``keep_data`` no
    namespace is deleted (deleting one deletes everything in it, claims included)."""
    namespaces = [] if keep_data else list(record.get("created_namespaces") or [])
    if record.get("created_namespace") and not keep_data:
        namespaces.append(env.namespace)
    steps: list[Step] = []
    for item in record.get("created_service_accounts") or []:
        ns, _, name = str(item).partition("/")
        if ns not in namespaces:
            steps.append(
                Step(
                    f"delete service account {ns}/{name} (created by up)",
                    action=lambda ns=ns, name=name: env.api.delete_service_account(ns, name),  # type: ignore[misc]
                )
            )
    for ns in namespaces:
        steps.append(
            Step(
                f"delete namespace {ns} (created by up)",
                action=lambda ns=ns: _delete_owned_namespace(env, ns),  # type: ignore[misc]
            )
        )
    return steps


def _delete_owned_namespace(env: DeployTarget, namespace: str) -> None:
    """Delete ``namespace`` only if vaultdr created it and it holds no pod or claim that
    vaultdr did not put there (a team may have deployed into it since): deleting a
    namespace deletes everything in it."""
    if not owns_namespace(env, namespace):
        print(
            f"  namespace {namespace} is not vaultdr's (any more): left as it is", file=sys.stderr
        )
        return
    others = foreign_workloads(env, namespace)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        print(
            f"  namespace {namespace} was created by vaultdr but now holds {shown}: left as "
            f"it is (delete it yourself once that is gone: kubectl delete namespace {namespace})",
            file=sys.stderr,
        )
        return
    env.api.delete_namespace(namespace)


def foreign_workloads(env: DeployTarget, namespace: str) -> list[str]:
    """The pods and claims in ``namespace`` that are not vaultdr's and not already going:
    vaultdr's are the releases' pods (``app.kubernetes.io/instance``), the kind emulator's
    (``app.kubernetes.io/part-of: vaultdr``), the nodes' claims and anything terminating."""
    ours = {env.kube.release, env.kube.ops_release}
    claims = {env.pvc_name(node) for node in env.node_names()}
    found = [
        f"pod {pod.name}"
        for pod in env.api.list_pods(namespace, "")
        if not pod.deleting
        and pod.labels.get("app.kubernetes.io/instance") not in ours
        and pod.labels.get("app.kubernetes.io/part-of") != "vaultdr"  # the kind emulator
    ]
    found += [
        f"pvc {pvc['name']}"
        for pvc in env.api.list_pvcs(namespace)
        if not pvc["deleting"] and not (namespace == env.namespace and pvc["name"] in claims)
    ]
    return found


def node_hosts(env: DeployTarget) -> list[str]:
    """Every name a node is reached by: per-pod internal DNS, the services (all named after
    the chart's fullname, :func:`chart_fullname`), and loopback (port-forwards)."""
    fullname, ns = chart_fullname(env), env.namespace
    hosts = ["127.0.0.1", "localhost", f"*.{fullname}-internal", f"*.{fullname}-internal.{ns}.svc"]
    for service in (fullname, f"{fullname}-active", f"{fullname}-internal"):
        hosts += [service, f"{service}.{ns}", f"{service}.{ns}.svc"]
    return hosts


def tls_steps(env: DeployTarget) -> list[Step]:
    """The nodes' TLS Secret: vaultdr's CA, or cert-manager's Certificate (ops chart)."""
    ns, secret = env.namespace, env.kube.tls_secret
    if env.kube.tls_source != "cert-manager":
        return [
            Step(
                f"create secret {ns}/{secret} (CA and node certificates), unless cert-manager "
                "manages it",
                action=lambda: apply_tls_secret(env),
            )
        ]
    return [
        Step(
            f"write {stack_values_file(env)} (the stack file as the ops chart's `stack`)",
            action=lambda: write_stack_values(env),
        ),
        Step(
            f"install the ops chart's cert-manager Certificate for secret {ns}/{secret} "
            "(agents off until the cluster is up)",
            helm_install_ops(env, tls_only=True),
        ),
        Step(
            f"wait for cert-manager to issue secret {ns}/{secret} (never written by vaultdr)",
            action=lambda: apply_tls_secret(env),
        ),
    ]


def tls_from_cert_manager(env: DeployTarget) -> bool:
    """True when ``up`` found the nodes' TLS Secret managed by cert-manager."""
    return read_record(env).get("tls") == "cert-manager"


def cert_manager_certificate(annotations: dict[str, str] | None) -> str | None:
    """The Certificate that manages a Secret with these annotations, or None."""
    return (annotations or {}).get(CERT_MANAGER_CERTIFICATE) or None


def apply_tls_secret(env: DeployTarget) -> None:
    """The CA (kept in the state directory) and one server certificate for every node.

    A Secret cert-manager manages (annotation ``cert-manager.io/certificate-name``) is
    never written: with ``kube.tls_source: cert-manager`` this waits until cert-manager
    has issued it (``ca.crt``, ``tls.crt``, ``tls.key``); either way its ``ca.crt`` is
    the nodes' CA from then on (``ca_file()`` follows its rotations)."""
    ns, name = env.namespace, env.kube.tls_secret
    if env.kube.tls_source == "cert-manager":
        _wait(env, f"cert-manager to issue secret {ns}/{name}", lambda: _issued(env))
        update_record(env, tls="cert-manager")
        return
    certificate = cert_manager_certificate(env.api.read_secret_annotations(ns, name))
    if certificate is not None:
        print(
            f"  secret {ns}/{name} is managed by cert-manager (Certificate {certificate}): "
            "not overwritten; its ca.crt is the nodes' CA",
            file=sys.stderr,
        )
        update_record(env, tls="cert-manager")
        return
    update_record(env, tls="vaultdr")
    ca = LocalCA(env.state_dir / "ca")
    pair = ca.issue_server_cert(env.kube.release, env.state_dir / "tls", hosts=node_hosts(env))
    env.api.apply_secret(
        env.namespace,
        env.kube.tls_secret,
        {
            "ca.crt": ca.cert_path.read_bytes(),
            "tls.crt": pair.cert.read_bytes(),
            "tls.key": pair.key.read_bytes(),
        },
    )


def _issued(env: DeployTarget) -> bool:
    ns, name = env.namespace, env.kube.tls_secret
    if cert_manager_certificate(env.api.read_secret_annotations(ns, name)) is None:
        return False
    data = env.api.read_secret_data(ns, name)
    return all(data.get(key) for key in ("ca.crt", "tls.crt", "tls.key"))


def apply_aws_emulator(env: DeployTarget, manifest: str) -> None:
    """Create the emulator's objects, its containers on the ops chart's agent image
    (:func:`agent_image`, the image ``up`` built and loaded), whatever tag the manifest
    names; then wait for the credentials Secrets its bootstrap Job writes."""
    env.api.create_from_manifest(manifest, env.namespace, images={AGENT_IMAGE: agent_image(env)})

    def credentials_ready() -> bool:
        try:
            for secret in env.kube.aws_secrets.values():
                env.api.read_secret_data(env.namespace, secret)
        except VaultdrError:
            return False
        return True

    _wait(env, "the AWS emulator's credentials Secrets", credentials_ready)


def initialize(env: DeployTarget) -> None:
    """Initialize node 0 with recovery keys unless it is; break-glass material to SSM."""
    stack, first = env.stack, env.node_names()[0]

    def answering() -> bool:
        try:
            return bool(env.client(first).read_seal_status())
        except VaultdrError:
            return False

    _wait(env, f"{first} answering", answering)
    client = env.client(first)
    if client.read_seal_status().get("initialized"):
        return
    root = initialize_cluster(
        client,
        env.aws(),
        cluster=stack.cluster,
        recovery_shares=stack.init.recovery_shares,
        recovery_threshold=stack.init.recovery_threshold,
    )
    _wait(env, f"{first} active", lambda: _active(root))
    root.set_autopilot_stabilization(stack.raft.autopilot_stabilization)


def configure(env: DeployTarget) -> None:
    for change in env.configure():
        print(f"  {change}", file=sys.stderr)


def wait_healthy(env: DeployTarget) -> None:
    _wait(
        env, "every node unsealed and a voter, one active", lambda: env.status(quick=True).healthy
    )


def _active(client: VaultClient) -> bool:
    try:
        health = client.read_health()
    except VaultdrError:
        return False
    return health.get("sealed") is False and health.get("standby") is False


def _wait(env: DeployTarget, what: str, condition: Callable[[], bool]) -> None:
    timeout = env.kube.timeout
    if not wait_for(condition, timeout=timeout, interval=1.0):
        raise EnvironmentStartError(
            f"{what} did not happen within {timeout:.0f} s",
            hint=f"look at the pods: kubectl -n {env.namespace} get pods; kubectl -n "
            f"{env.namespace} describe pod {env.node_names()[0]}",
        )
