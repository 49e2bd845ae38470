"""``vaultdr agent aws-bootstrap``: the kind AWS emulator's bootstrap Job.

``environments/kind/aws-emulator.yaml`` runs it once per emulator pod, in the agent
image, with the Job's environment: ``AWS_ENDPOINT_URL`` (the emulator; required),
``AWS_REGION``, ``VAULTDR_CLUSTER``, ``VAULTDR_BUCKET``, ``VAULTDR_HOST_ENDPOINT`` (the
emulator as the host reaches it, through kind's port mapping) and ``POD_NAMESPACE``.

It waits for the emulator's readiness path, then bootstraps it with the local
environment's code (:func:`vaultdr.envs.local.awsemu.bootstrap`): the admin user with
the emulator's unauthenticated allowance, the seal's KMS key and alias, the versioned
snapshot bucket, and one IAM user per principal of :mod:`vaultdr.principals` with the
policy that module renders. Each access key goes into its own Secret
``vaultdr-aws-<principal>`` as soon as it exists, the admin's first, so no key is ever
lost; the facts that are not secret (endpoints, key id, ARN and alias, bucket, SSM
prefix, user names) go into the ConfigMap ``vaultdr-aws`` and to stdout.

Hazards:

* The allowance is spent once. A second run against the same emulator fails at its
  first request (and changes nothing there); restart the emulator (``kubectl rollout
  restart deploy/moto``, which loses every key it held) and run the Job again. That is
  why the Job has ``backoffLimit: 0``.
* Nothing may call the emulator's AWS API before this runs (a probe that lists buckets
  spends the allowance): readiness is the guard's own path, which never reaches moto.
* The Kubernetes client is set up before the allowance is spent, but a Secret write
  refused afterwards (RBAC) still leaves the emulator bootstrapped without its keys kept:
  restart it as above once the Role is fixed.
* Secrets and the ConfigMap are created, or replaced when they exist (409): the Job's
  Role may create and update them, and nothing else, not even read them.
* Every Secret holds a live access key of the emulator; none is ever printed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from vaultdr.aws import AwsCredentials
from vaultdr.envs.kube.api import KubeApi
from vaultdr.envs.local import awsemu
from vaultdr.errors import ConfigError, EnvironmentStartError
from vaultdr.polling import wait_for
from vaultdr.principals import STACK_PRINCIPALS, Principal, break_glass_prefix, seal_alias

log = logging.getLogger("vaultdr.agent")

#: The ConfigMap with the bootstrap's facts (no secret).
FACTS_CONFIGMAP = "vaultdr-aws"
#: What the Secrets and the ConfigMap are labelled with.
LABELS = {"app.kubernetes.io/part-of": "vaultdr", "app.kubernetes.io/component": "aws"}
#: How long to wait for the emulator's readiness path.
READY_TIMEOUT = 180.0


def secret_name(who: Principal) -> str:
    """The Secret holding ``who``'s access key (``Kube.aws_secrets`` names the same)."""
    return f"vaultdr-aws-{who.name}"


@dataclass(frozen=True)
class BootstrapSettings:
    """What the Job's environment says: the emulator, the names, the namespace."""

    endpoint_url: str
    region: str
    cluster: str
    bucket: str
    host_endpoint_url: str
    namespace: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> BootstrapSettings:
        env = dict(os.environ if environ is None else environ)
        missing = [name for name in ("AWS_ENDPOINT_URL", "POD_NAMESPACE") if not env.get(name)]
        if missing:
            raise ConfigError(
                f"aws-bootstrap has no {', '.join(missing)} in its environment",
                hint="AWS_ENDPOINT_URL must name the emulator (never AWS itself); run it "
                "from the Job in environments/kind/aws-emulator.yaml",
            )
        return cls(
            endpoint_url=env["AWS_ENDPOINT_URL"].rstrip("/"),
            region=env.get("AWS_REGION") or "us-east-1",
            cluster=env.get("VAULTDR_CLUSTER") or "vaultdr-kind",
            bucket=env.get("VAULTDR_BUCKET") or "vaultdr-snapshots",
            host_endpoint_url=env.get("VAULTDR_HOST_ENDPOINT") or "http://127.0.0.1:31566",
            namespace=env["POD_NAMESPACE"],
        )


def facts(stack: awsemu.AwsStack, settings: BootstrapSettings) -> dict[str, str]:
    """The ConfigMap's data: everything about the bootstrapped emulator but the keys."""
    found = {
        "endpoint_url": stack.endpoint_url,
        "host_endpoint_url": settings.host_endpoint_url,
        "region": stack.region,
        "cluster": settings.cluster,
        "kms_key_id": stack.kms_key_id,
        "kms_key_arn": stack.kms_key_arn,
        "kms_alias": seal_alias(settings.cluster),
        "bucket": stack.bucket,
        "ssm_prefix": break_glass_prefix(settings.cluster),
    }
    for who in STACK_PRINCIPALS:
        found[f"{who.name}_user"] = who.user_name(settings.cluster)
    return found


def wait_until_ready(url: str, *, timeout: float = READY_TIMEOUT) -> None:
    """Wait for the emulator's readiness path (which does not spend the allowance)."""
    if not wait_for(lambda: awsemu.moto_ready(url, timeout=2.0), timeout=timeout, interval=1.0):
        raise EnvironmentStartError(
            f"the AWS emulator at {url} did not answer its readiness path in {timeout:.0f} s",
            hint="is the moto Deployment running? kubectl logs deploy/moto",
        )


def bootstrap_emulator(
    settings: BootstrapSettings, api: KubeApi, *, ready_timeout: float = READY_TIMEOUT
) -> dict[str, str]:
    """Wait for the emulator, bootstrap it, keep every key in its Secret; the facts."""
    wait_until_ready(settings.endpoint_url, timeout=ready_timeout)

    def keep(who: Principal, credentials: AwsCredentials) -> None:
        data = {
            "AWS_ACCESS_KEY_ID": credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
        }
        api.write_secret(settings.namespace, secret_name(who), data, labels=LABELS)
        log.info("wrote Secret %s/%s", settings.namespace, secret_name(who))

    stack = awsemu.bootstrap(
        settings.endpoint_url,
        settings.region,
        cluster=settings.cluster,
        bucket=settings.bucket,
        keep=keep,
    )
    found = facts(stack, settings)
    api.write_configmap(settings.namespace, FACTS_CONFIGMAP, found, labels=LABELS)
    log.info("wrote ConfigMap %s/%s", settings.namespace, FACTS_CONFIGMAP)
    return found


def run_aws_bootstrap(environ: Mapping[str, str] | None = None) -> int:
    """``vaultdr agent aws-bootstrap``: bootstrap once, print the facts; exit code 0."""
    settings = BootstrapSettings.from_environ(environ)
    api = KubeApi.in_cluster()  # before the allowance is spent: a pod that cannot write fails here
    try:
        print(json.dumps(bootstrap_emulator(settings, api), indent=2, sort_keys=True))
    finally:
        api.close()
    return 0
