"""The two kube environments and where they come from: ``--env kind`` and ``--env eks``.

:class:`KindEnvironment` is a kind cluster vaultdr creates (or finds), its AWS the
in-cluster emulator whose keys are in Secrets; :class:`EksEnvironment` is an existing
EKS cluster with real AWS. They differ from :class:`~vaultdr.envs.kube.env.KubeEnvironment`
in their safety rule (see that module's docstring) and in how they reach AWS.

Hazard: on eks a confirmed destructive fault really breaks a production-shaped cluster;
the namespace's opt-in annotation and the named context are the only guard.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from vaultdr.aws import Aws, AwsCredentials, AwsTarget
from vaultdr.config import Stack, load_stack_for
from vaultdr.envs.kube import deploy, terraform
from vaultdr.envs.kube.env import (
    ALLOW_ANNOTATION,
    CONFIRM_ENV_VAR,
    CONFIRM_FLAG,
    DestructiveFaultRefused,
    KubeEnvironment,
    seal_principal_kind,
)
from vaultdr.errors import ConfigError, StackStateError
from vaultdr.statedir import STATE_ENV_VAR, resolve_state_dir

#: The audience EKS's pod identity webhook projects for IRSA, which the roles' trust
#: policies require (environments/eks/terraform/iam.tf).
IRSA_AUDIENCE = "sts.amazonaws.com"
#: Seconds the seal role's session lasts (STS's minimum is 900).
SEAL_SESSION = 900


class KindEnvironment(KubeEnvironment):
    """A kind cluster vaultdr creates (or finds): faults allowed in its own context only."""

    name = "kind"

    def __init__(self, state_dir: Path, stack: Stack, **kwargs: Any) -> None:
        super().__init__(state_dir, stack, **kwargs)
        if self.kube.context is None:
            self.kube = self.kube.model_copy(update={"context": self.kind_context()})

    def kind_context(self) -> str:
        return f"kind-{self.kube.kind_cluster}"

    def _check_destructive(self, fault: str) -> None:
        """The context must be ``kind-<kind_cluster>`` *and* its API server kind's own:
        a context can be renamed, a kind cluster's control-plane node cannot.

        kind v0.29.0 names that node ``<cluster>-control-plane``
        (pkg/cluster/internal/providers/common/namer.go), has kubeadm label it
        ``node-role.kubernetes.io/control-plane`` and starts its kubelet with
        ``provider-id: kind://<provider>/<cluster>/<node>``
        (pkg/cluster/internal/kubeadm/config.go), which no other cluster's node carries."""
        context = self.current_context()
        if context != self.kind_context():
            raise DestructiveFaultRefused(
                f"refusing {fault}: --env kind acts only in context {self.kind_context()!r}, "
                f"not {context!r}",
                hint="create the cluster with `vaultdr up --env kind`, or fix kube.kind_cluster",
            )
        cluster = self.kube.kind_cluster
        node_name = f"{cluster}-control-plane"
        node = self.api.read_node(node_name)
        provider = re.compile(rf"kind://[a-z]+/{re.escape(cluster)}/{re.escape(node_name)}")
        is_kind = (
            node is not None
            and "node-role.kubernetes.io/control-plane" in node.labels
            and provider.fullmatch(node.provider_id) is not None
        )
        if not is_kind:
            found = "no such node" if node is None else f"providerID {node.provider_id!r}"
            raise DestructiveFaultRefused(
                f"refusing {fault}: context {context!r} ({self.api.host}) is not the kind "
                f"cluster {cluster!r}: its node {node_name} is not kind's ({found})",
                hint="the context's name says kind but its API server is another cluster's: "
                f"recreate the context with `kind export kubeconfig --name {cluster}`",
            )

    def _aws_target(self, principal: str) -> AwsTarget:
        secret = self.kube.aws_secrets.get(principal)
        if secret is None:
            raise ConfigError(f"no kube.aws_secrets entry for the {principal} principal")
        data = self.api.read_secret_data(self.namespace, secret)
        creds = AwsCredentials(data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"])
        return AwsTarget(self.stack.region, self.aws_endpoint(), creds)

    def aws_endpoint(self) -> str:
        """``kube.aws_endpoint``, else a port-forward to a pod behind the emulator's service."""
        if self.kube.aws_endpoint:
            return self.kube.aws_endpoint
        selector = self.api.read_service_selector(self.namespace, self.kube.aws_service)
        pods = [p for p in self.api.list_pods(self.namespace, selector) if p.phase == "Running"]
        if not pods:
            raise StackStateError(
                f"no running pod behind service {self.namespace}/{self.kube.aws_service}",
                hint="is the AWS emulator installed? (`vaultdr up --env kind`)",
            )
        return f"http://127.0.0.1:{self._forward(pods[0].name, self.kube.aws_service_port)}"


class EksEnvironment(KubeEnvironment):
    """An existing EKS cluster: destructive faults only when the namespace opts in and the
    command names the context it expects to break.

    Its stack takes the Terraform facts ``vaultdr kube values`` kept in the state directory
    (:mod:`vaultdr.envs.kube.terraform`), when there are some. AWS acts through boto3's
    default chain, except the seal: its own credentials are the seal role's, got exactly as
    the server pod's SDK gets them (IRSA), for revoke-kms to see its deny in force."""

    name = "eks"

    def __init__(
        self, state_dir: Path, stack: Stack, *, kept_outputs: bool = True, **kwargs: Any
    ) -> None:
        # kept_outputs=False: stack.yaml as written, for `kube values`, which writes the
        # kept outputs again (and so must work over a corrupt copy).
        outputs = terraform.read_filled_outputs(state_dir) if kept_outputs else None
        if outputs is not None:
            stack = terraform.apply_outputs(stack, outputs)
        super().__init__(state_dir, stack, **kwargs)
        self.terraform_outputs = outputs
        self._seal_expires = 0.0

    def aws(self, principal: str = "admin") -> Aws:
        """As :meth:`KubeEnvironment.aws`; the seal's IRSA credentials are renewed before
        they expire."""
        if principal == "seal" and time.monotonic() > self._seal_expires:
            with self._lock:
                self._aws.pop("seal", None)
        return super().aws(principal)

    def _aws_target(self, principal: str) -> AwsTarget:
        """The default chain; for the seal, the seal role's own credentials (IRSA)."""
        seal = self.kube.seal_principal
        if principal != "seal" or not seal or seal_principal_kind(seal)[0] != "role":
            return super()._aws_target(principal)
        creds = self.seal_role_credentials()
        self._seal_expires = time.monotonic() + SEAL_SESSION - 300
        return AwsTarget(self.stack.region, self.kube.aws_endpoint, creds)

    def server_service_account(self) -> tuple[str, str]:
        """The server pods' service account: stack.yaml's reviewer (Vault's own service
        account) when it is in this namespace, else the official chart's.

        As ``openbao.serviceAccount.name`` (openbao-helm, charts/openbao/templates/
        _helpers.tpl; ``vault.serviceAccount.name`` in vault-helm's templates/_helpers.tpl)
        names it for the StatefulSet's ``serviceAccountName``: with
        ``server.serviceAccount.create`` (the default) ``server.serviceAccount.name``, else
        the chart's fullname; without it ``server.serviceAccount.name``, else ``default``."""
        reviewer = self.stack.kubernetes.reviewer
        if reviewer.namespace == self.namespace:
            return reviewer.namespace, reviewer.name
        account = self._server_values_service_account()
        name = str(account.get("name") or "")
        if account.get("create", True) in (False, "false"):
            return self.namespace, name or "default"
        return self.namespace, name or deploy.chart_fullname(self)

    def _server_values_service_account(self) -> dict[str, Any]:
        """``server.serviceAccount`` of the values file ``up`` installs ({} when unset)."""
        path = Path(deploy.values_file(self))
        if not path.is_file():
            return {}
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"cannot read the chart values {path} ({type(exc).__name__})",
                hint="fix the YAML of kube.values, or point kube.values at the right file",
            ) from None
        account: Any = values
        where = ""
        for key in ("server", "serviceAccount"):
            if account is None:
                return {}
            if not isinstance(account, dict):
                raise ConfigError(f"{path}: {where or 'the top level'} must be a mapping")
            account, where = account.get(key), f"{where}.{key}".lstrip(".")
        if account is None:
            return {}
        if not isinstance(account, dict):
            raise ConfigError(f"{path}: server.serviceAccount must be a mapping")
        return account

    def seal_role_credentials(self) -> AwsCredentials:
        """What the server pod's SDK does with IRSA: a token of its service account for the
        audience ``sts.amazonaws.com`` (TokenRequest), exchanged by STS
        AssumeRoleWithWebIdentity for the seal role's credentials. Neither is ever logged."""
        namespace, name = self.server_service_account()
        token = self.service_account_token(
            namespace, name, audiences=[IRSA_AUDIENCE], ttl=SEAL_SESSION
        )
        sts = Aws(AwsTarget(self.stack.region, self.kube.aws_endpoint))
        return sts.assume_role_with_web_identity(
            str(self.kube.seal_principal),
            token,
            session_name="vaultdr-seal-check",
            seconds=SEAL_SESSION,
        )

    def _check_destructive(self, fault: str) -> None:
        super()._check_destructive(fault)
        context = self.current_context()
        annotations = self.api.read_namespace_annotations(self.namespace)
        missing: list[str] = []
        if annotations.get(ALLOW_ANNOTATION) != "true":
            missing.append(
                f"annotate the namespace: kubectl annotate namespace {self.namespace} "
                f'{ALLOW_ANNOTATION}="true"'
            )
        if self.confirm_context != context:
            said = f" (it named {self.confirm_context!r})" if self.confirm_context else ""
            missing.append(
                f"name the context you expect to break{said}: {CONFIRM_FLAG} {context} "
                f"(or {CONFIRM_ENV_VAR}={context})"
            )
        if missing:
            raise DestructiveFaultRefused(
                f"refusing {fault} on eks context {context!r}, namespace {self.namespace}: "
                "destructive faults on a real cluster need both an opt-in and a confirmation",
                hint="; and ".join(missing),
            )


def make_kube_environment(
    env_name: str, state_dir: Path, stack: Stack, **kwargs: Any
) -> KubeEnvironment:
    """The kube environment for ``--env kind`` or ``--env eks``."""
    if env_name == "kind":
        return KindEnvironment(state_dir, stack, **kwargs)
    if env_name == "eks":
        return EksEnvironment(state_dir, stack, **kwargs)
    raise ConfigError(f"--env {env_name}: not a kube environment", hint="use kind or eks")


def kube_environment_for(
    env_name: str,
    *,
    config: str | None,
    state_dir: str | None,
    confirm_context: str | None = None,
    dry_run: bool = False,
    kept_outputs: bool = True,
) -> KubeEnvironment:
    """The environment of ``--env kind|eks``, its state in ``.vaultdr-<env>`` unless told
    (``--state-dir``, then ``$VAULTDR_STATE_DIR``); ``kept_outputs=False``: on eks, without
    the Terraform outputs ``kube values`` kept (for ``kube values`` itself)."""
    stack, path = load_stack_for(env_name, config)
    chosen = state_dir or os.environ.get(STATE_ENV_VAR) or f".vaultdr-{env_name}"
    extra: dict[str, Any] = {} if kept_outputs else {"kept_outputs": False}
    return make_kube_environment(
        env_name,
        resolve_state_dir(chosen),
        stack,
        stack_file=path,
        confirm_context=confirm_context,
        dry_run=dry_run,
        **extra,
    )
