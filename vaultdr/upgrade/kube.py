"""``vaultdr upgrade-check --env kind|eks``: prove a server (and chart) upgrade on a cluster.

The local check (:mod:`vaultdr.upgrade.check`) on a stack already up on kind or EKS
(``vaultdr up --env kind|eks``), with the official chart doing what it does in
production:

1. read-only first: every node healthy on one version (today's), and for a chart
   upgrade (``--chart-version NEW``) our values file's key paths compared with the
   new chart's ``values.yaml`` (``helm show values``; :mod:`vaultdr.envs.kube.chartkeys`):
   every value we set that the new chart no longer has is a warning in the verdict
   and the evidence, and with ``--strict-values`` the check stops there (exit 2);
2. the scheduled snapshots are paused (the ops chart upgraded with
   ``snapshot.enabled=false``), secrets are written and the pre-upgrade snapshot is
   taken from here, with the snapshot principal as the agent takes it;
3. ``helm upgrade`` of the official chart with ``server.image.tag=VERSION``. Its
   StatefulSet's update strategy is ``OnDelete`` (openbao-helm 0.27.0 and vault-helm
   v0.30.1 values.yaml, ``server.updateStrategyType``), so no pod changes until it is
   deleted: the followers' pods are deleted one at a time, gracefully (no
   ``gracePeriodSeconds``: the chart's ``terminationGracePeriodSeconds`` and its
   preStop), each waited for until its pod is recreated, its own ``sys/health``
   reports the target version, unsealed, and the cluster is healthy (every node a
   voter, one active); then the leader steps down (``sys/step-down``) and its pod
   goes last. All of it under write load, with the timeline and the ledger
   (:class:`~vaultdr.session.DrillSession`): writes refused and acknowledged writes
   lost are measured as in the local check;
4. restore compatibility: total loss (every PVC, then every pod), and the ops
   chart's restore watcher restores the newest snapshot that verifies. The
   snapshots are paused since step 2, so that is the pre-upgrade one; the check
   reads the watcher's record (``vaultdr.io/last-restore``) and fails if it
   restored any other key. Then the secrets, the configuration (0 changes) and the
   kubernetes-auth logins are checked, and the snapshots resumed;
5. the drill features on the upgraded cluster (``--no-drills`` skips them);
6. evidence like the local check's, the ``upgrade`` section naming both images and
   chart versions.

``--dry-run`` prints every helm command line and API change (:func:`plan_upgrade`)
and runs none: no tool, no mutating request.

Image keys: both charts build the server image from ``server.image.repository`` and
``server.image.tag`` (openbao-helm 0.27.0 templates/server-statefulset.yaml: registry
``server.image.registry``, the tag defaulting to the chart's appVersion; vault-helm
v0.30.1 templates/server-statefulset.yaml: ``repository:tag``).

Values on upgrade: a server-only upgrade keeps the release's values
(``--reuse-values``). A chart upgrade is installed from our values file instead
(``--values``, as ``up`` does), because ``--reuse-values`` renders the new chart
with the *old* chart's defaults (helm pkg/action/upgrade.go, ``reuseValues``:
``chart.Values = oldVals``), which is not what a fresh install of the new chart
gives and not what the key check compared.

Hazards:

* It really upgrades the cluster it runs on: run it on kind or a staging EKS (on
  eks it needs the same opt-in and confirmation as a destructive fault; total loss
  is part of it). A passed check leaves the cluster on the target; our values file
  still names the old tag, so set ``server.image.tag`` (and ``kube.chart_version``)
  before the next ``vaultdr up``, which would otherwise put the old image back into
  the StatefulSet (and into every pod it recreates).
* A node that does not come back on the target is put back: ``helm rollback`` to the
  revision before the upgrade, then every pod already replaced is deleted once more,
  one at a time, and waited for on the previous version. The verdict says so and
  whether the cluster serves again.
* The scheduled snapshots stay paused until the check ends; they are resumed in every
  case, an interrupted check included (run ``vaultdr up`` to resume them otherwise).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vaultdr import checks, statedir
from vaultdr.drill.runner import new_run_id
from vaultdr.envs.base import Environment
from vaultdr.envs.kube import chartkeys, deploy
from vaultdr.envs.kube.deploy import Step, _context_args
from vaultdr.envs.kube.env import KubeEnvironment
from vaultdr.errors import ConfigError, StackStateError, VaultdrError
from vaultdr.evidence.record import ScenarioDraft, now_iso, snapshot_record
from vaultdr.polling import wait_for
from vaultdr.session import DrillSession
from vaultdr.upgrade.check import (
    SEEDED,
    EngineRecord,
    Say,
    UpgradeCheck,
    UpgradeCheckOptions,
    UpgradeResult,
)
from vaultdr.upgrade.rolling import NodeUpgrade, UpgradeFailed, on_version, roll_nodes

#: How long one node may take to come back (image pull included).
NODE_TIMEOUT = 300.0
#: How long the restore watcher may take to notice the loss and restore.
RESTORE_TIMEOUT = 300.0
#: The official charts' server image tag key (see the module docstring).
IMAGE_TAG_KEY = "server.image.tag"

Runner = Callable[[list[str]], str]


@dataclass
class KubeUpgradeOptions(UpgradeCheckOptions):
    """The check on a cluster; ``config`` is the stack file the environment was made from."""

    chart_version: str | None = None
    strict_values: bool = False
    node_timeout: float = NODE_TIMEOUT
    restore_timeout: float = RESTORE_TIMEOUT


@dataclass(frozen=True)
class ServerImage:
    """One side of the upgrade on a cluster: the server image and the chart that runs it."""

    kind: str
    version: str
    image: str
    chart: str
    chart_version: str

    def to_dict(self) -> dict[str, Any]:
        """As the evidence's ``upgrade.from``/``to`` (the image in place of a binary; its
        digest is not read, so ``sha256`` is null)."""
        return {
            "kind": self.kind,
            "version": self.version,
            "binary": self.image,
            "source": f"chart {self.chart} {self.chart_version}",
            "sha256": None,
            "chart_version": self.chart_version,
        }


# --- what the check changes, as command lines ---------------------------------------------
def chart_upgrade(env: KubeEnvironment, chart_version: str | None) -> bool:
    return bool(chart_version) and chart_version != env.kube.chart_version


def helm_upgrade_server(
    env: KubeEnvironment, *, version: str, chart_version: str | None = None
) -> list[str]:
    """The official chart with the target server image (see the module docstring on values)."""
    target_chart = chart_version or env.kube.chart_version
    values = (
        ["--values", deploy.values_file(env)]
        if chart_upgrade(env, chart_version)
        else ["--reuse-values"]
    )
    return [
        "helm",
        "upgrade",
        env.kube.release,
        env.kube.chart,
        "--version",
        target_chart,
        "--namespace",
        env.namespace,
        *values,
        "--set",
        f"{IMAGE_TAG_KEY}={version}",
        *_context_args(env),
    ]


def helm_status(env: KubeEnvironment) -> list[str]:
    return [
        "helm",
        "status",
        env.kube.release,
        "--namespace",
        env.namespace,
        "--output",
        "json",
        *_context_args(env),
    ]


def helm_rollback(env: KubeEnvironment, revision: int | str) -> list[str]:
    return [
        "helm",
        "rollback",
        env.kube.release,
        str(revision),
        "--namespace",
        env.namespace,
        *_context_args(env),
    ]


def helm_show_values(env: KubeEnvironment, chart_version: str) -> list[str]:
    return ["helm", "show", "values", env.kube.chart, "--version", chart_version]


def helm_ops(env: KubeEnvironment, *, snapshots: bool) -> list[str]:
    """The ops chart as ``up`` installs it; without ``snapshots`` its snapshot agent is off."""
    argv = deploy.helm_install_ops(env)
    return argv if snapshots else [*argv, "--set", "snapshot.enabled=false"]


def snapshot_agent_selector(env: KubeEnvironment) -> str:
    """The ops chart's snapshot agent pods (its ``vaultdr-ops.selectorLabels``)."""
    return f"app.kubernetes.io/instance={env.kube.ops_release},app.kubernetes.io/component=snapshot"


def delete_pod_line(env: KubeEnvironment, node: str, version: str) -> str:
    return (
        f"delete pod {env.namespace}/{node} (graceful: no gracePeriodSeconds, the pod's own "
        f"terminationGracePeriodSeconds), then wait until it is recreated and reports {version}, "
        "unsealed, a raft voter, the cluster healthy"
    )


# --- the chart's values ----------------------------------------------------------------------
def load_values(text: str, *, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not YAML ({type(exc).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} is not a mapping of values")
    return data


def removed_values(
    env: KubeEnvironment, chart_version: str, *, run: Runner = deploy.run_command
) -> list[str]:
    """Every key path our values file sets that ``chart_version``'s values.yaml lacks."""
    path = Path(deploy.values_file(env))
    try:
        ours = load_values(path.read_text(), what=str(path))
    except OSError as exc:
        raise ConfigError(
            f"cannot read the chart values {path} ({exc.strerror})", hint="fix kube.values"
        ) from None
    run(deploy.helm_repo_add(env))
    chart = load_values(
        run(helm_show_values(env, chart_version)),
        what=f"`helm show values {env.kube.chart} --version {chart_version}`",
    )
    return chartkeys.missing_in_chart(ours, chart)


def stack_values(env: KubeEnvironment) -> Mapping[str, Any]:
    """Our values file, parsed (empty when it cannot be read)."""
    with contextlib.suppress(OSError, ConfigError):
        path = Path(deploy.values_file(env))
        return load_values(path.read_text(), what=str(path))
    return {}


def server_image(env: KubeEnvironment, version: str, chart_version: str) -> ServerImage:
    """The image reference the chart renders for ``version`` from our values file."""
    image: Any = stack_values(env)
    where = ""
    for key in ("server", "image"):
        image = image.get(key) or {}
        where = f"{where}.{key}".lstrip(".")
        if not isinstance(image, Mapping):
            raise ConfigError(
                f"{deploy.values_file(env)}: {where} must be a mapping, not {type(image).__name__}",
                hint=f"fix {where} in kube.values (see the chart's values.yaml)",
            )
    openbao = env.stack.engine.kind == "openbao"
    default_repository = "openbao/openbao" if openbao else "hashicorp/vault"
    repository = str(image.get("repository") or default_repository)
    registry = str(image.get("registry") or ("quay.io" if openbao else ""))
    reference = f"{registry}/{repository}:{version}" if registry else f"{repository}:{version}"
    return ServerImage(env.stack.engine.kind, version, reference, env.kube.chart, chart_version)


def running_version(env: KubeEnvironment) -> str:
    """The one version every node reports; StackStateError when the cluster is not healthy
    on one version (an upgrade check starts only from a healthy cluster)."""
    status = env.status(quick=True)
    versions = {n.name: n.version for n in status.nodes}
    if not status.healthy or len(set(versions.values())) != 1 or None in versions.values():
        raise StackStateError(
            f"the cluster must be healthy and on one version before an upgrade check: {versions}",
            hint=f"check `vaultdr status --env {env.name}`; `vaultdr up --env {env.name}` heals it",
        )
    return str(next(iter(versions.values())))


# --- the dry run -----------------------------------------------------------------------------
def plan_upgrade(
    env: KubeEnvironment, *, version: str, chart_version: str | None, drills: bool
) -> list[str]:
    """Every step of the check, command lines included; runs none and changes nothing
    (reading which pod leads is the only request it sends)."""
    names = env.node_names()
    try:
        leader = env.leader()
    except VaultdrError:
        leader = None
    if leader is None:  # the nodes cannot be asked from here: the order is named, not known
        leader, followers = "<the leader at run time>", ["<each follower, in name order>"]
    else:
        followers = [n for n in names if n != leader]
    bucket, prefix = env.snapshot_location()
    steps = [Step("check every node is healthy and on one version (read-only)")]
    if chart_upgrade(env, chart_version):
        assert chart_version is not None
        steps += [
            Step("add the chart repository", deploy.helm_repo_add(env)),
            Step("the new chart's values", helm_show_values(env, chart_version)),
            Step(
                f"compare the key paths of {deploy.values_file(env)} with them: report every "
                "value set there that the new chart does not have"
            ),
        ]
    steps += [
        Step("pause the scheduled snapshots", helm_ops(env, snapshots=False)),
        Step(f"write {SEEDED} secrets under secret/upgrade-check/ and the app secret"),
        Step(
            f"take the pre-upgrade snapshot into s3://{bucket}/{prefix}/{env.cluster_name()}/ "
            "(as the snapshot principal)"
        ),
        Step("start the timeline and the write ledger"),
        Step("the release's revision before the upgrade", helm_status(env)),
        Step(
            "upgrade the server image",
            helm_upgrade_server(env, version=version, chart_version=chart_version),
        ),
    ]
    steps += [Step(delete_pod_line(env, name, version)) for name in followers]
    steps += [
        Step(f"step down {leader}: PUT /v1/sys/step-down, wait for another node to lead"),
        Step(delete_pod_line(env, leader, version)),
        Step("stop the write ledger; read every acknowledged write back"),
    ]
    with env.recording() as planned:
        env.delete_all_volumes()
    steps += [Step(f"total loss: {line}") for line in planned]
    steps += [
        Step(
            "wait for the restore watcher's record (vaultdr.io/last-restore) naming the "
            "pre-upgrade snapshot"
        ),
        Step("check the secrets, the configuration (0 changes) and the kubernetes-auth logins"),
        Step("resume the scheduled snapshots", helm_ops(env, snapshots=True)),
    ]
    if drills:
        steps.append(Step(f"run the drill features with --env {env.name}"))
    rollback = shlex.join(helm_rollback(env, "<revision before the upgrade>"))
    steps.append(
        Step(
            f"only if a node does not come back on {version}: {rollback}; then that pod and "
            "every pod already replaced deleted again, one at a time"
        )
    )
    return deploy.run_plan(steps, dry_run=True)


# --- the rolling replacement -----------------------------------------------------------------
def _pod_state(env: KubeEnvironment, name: str) -> str:
    pod = env.api.read_pod(env.namespace, name)
    if pod is None:
        return "no pod"
    ready = "ready" if pod.ready else "not ready"
    return f"pod {pod.phase}, {ready}" + (", terminating" if pod.deleting else "")


def replace_pod(
    env: KubeEnvironment, name: str, *, version: str, token: str, timeout: float
) -> None:
    """Delete ``name``'s pod gracefully; return once the StatefulSet's new pod reports
    ``version``, unsealed, and the cluster is healthy. UpgradeFailed otherwise."""
    ns = env.namespace
    old = env.api.read_pod(ns, name)
    old_uid = old.uid if old else ""
    env.api.delete_pod(ns, name, grace_seconds=None)

    def back() -> bool:
        pod = env.api.read_pod(ns, name)
        if pod is None or pod.uid == old_uid or pod.deleting or pod.phase != "Running":
            return False
        return on_version(env, name, version) and checks.cluster_healthy(env, token).ok

    if not wait_for(back, timeout=timeout, interval=0.5):
        health = ""
        with contextlib.suppress(VaultdrError):
            reported = env.client(name).with_timeout(2.0).read_health()
            health = (
                f"; it reports version {reported.get('version')}, sealed {reported.get('sealed')}"
            )
        raise UpgradeFailed(
            f"{name} was not back on {version}, unsealed and the cluster healthy within "
            f"{timeout:.0f} s ({_pod_state(env, name)}{health})"
        )


def current_revision(env: KubeEnvironment, *, run: Runner = deploy.run_command) -> int:
    """The release's revision (``helm status -o json``'s ``version``)."""
    out = run(helm_status(env))
    try:
        return int(json.loads(out)["version"])
    except (ValueError, KeyError, TypeError):
        raise VaultdrError(
            f"`{shlex.join(helm_status(env))}` did not say the release's revision",
            hint="is the official chart installed (`vaultdr up`)?",
        ) from None


def rolling_replace(
    env: KubeEnvironment,
    token: str,
    *,
    target: str,
    previous: str,
    revision: int,
    timeout: float,
    say: Say,
    mark: Callable[[str, str], object] | None = None,
    run: Runner = deploy.run_command,
) -> list[NodeUpgrade]:
    """The pods replaced one at a time, followers first, the leader last after a step-down
    (the chart already renders ``target``). On a node that does not come back: ``helm
    rollback`` to ``revision``, then every touched pod replaced again on ``previous``."""

    def upgrade(name: str, role: str) -> None:
        say(f"replacing {name} ({role}) with a {target} pod")
        replace_pod(env, name, version=target, token=token, timeout=timeout)

    def revert(names: list[str]) -> None:
        say(f"helm rollback {env.kube.release} to revision {revision}")
        run(helm_rollback(env, revision))
        for name in reversed(names):
            say(f"putting {name} back on {previous}")
            try:
                replace_pod(env, name, version=previous, token=token, timeout=timeout)
            except UpgradeFailed as exc:
                say(f"  {exc.message}")

    return roll_nodes(env, token, upgrade=upgrade, revert=revert, say=say, mark=mark)


# --- the check ---------------------------------------------------------------------------------
class KubeUpgradeCheck(UpgradeCheck):
    """The check on a cluster; the scenario steps, judging and evidence are the local one's."""

    def __init__(
        self,
        options: KubeUpgradeOptions,
        env: KubeEnvironment,
        *,
        say: Say = print,
        run: Runner = deploy.run_command,
    ) -> None:
        super().__init__(options, say=say)
        self.kube_options = options
        self.env = env
        self.environment_name = env.name
        self.run_tool = run
        self.revision = 0
        self.removed: list[str] = []

    def run(self) -> UpgradeResult:
        env, options = self.env, self.kube_options
        if not options.to_version:
            raise ConfigError("say which version to check", hint="pass --to VERSION")
        deploy.check_tools(["helm"])
        env.check_destructive("upgrade-check")  # total loss is part of it
        chart_from = env.kube.chart_version
        chart_to = options.chart_version or chart_from
        if chart_upgrade(env, options.chart_version):
            self.removed = removed_values(env, chart_to, run=self.run_tool)
            if self.removed and options.strict_values:
                raise ConfigError(
                    f"chart {env.kube.chart} {chart_to} has no {', '.join(self.removed)}, "
                    f"which {deploy.values_file(env)} sets; nothing was changed",
                    hint="remove or rename them for the new chart, or run without --strict-values",
                )
        previous = server_image(env, running_version(env), chart_from)
        target = server_image(env, options.to_version, chart_to)
        self.upgrade_extra = {"removed_values": self.removed} if self.removed else {}
        env.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with statedir.locked(env.state_dir, command="upgrade-check"):
            return self._run_on_cluster(previous, target)

    def _run_on_cluster(self, previous: ServerImage, target: ServerImage) -> UpgradeResult:
        run_id = new_run_id()
        run_dir = (self.options.report_dir / run_id).resolve()
        run_dir.mkdir(parents=True)
        started = dt.datetime.now(dt.UTC)
        self.say(
            f"vaultdr upgrade-check --env {self.env.name} {run_id}: {previous.version} "
            f"(chart {previous.chart_version}) -> {target.version} (chart "
            f"{target.chart_version}); evidence in {run_dir}"
        )
        for path in self.removed:
            self.say(f"warning: chart {target.chart_version} has no {path}, which our values set")
        passed = False
        with self._snapshots_paused():
            passed = self._rolling_on_cluster(previous, target)
            if passed:
                self._restore_compatibility(self.env, target)
        if passed and self.options.drills:
            self._drills(Path(self.env.stack_file), run_dir, env_name=self.env.name)
        return self._finish(run_dir, run_id, started, previous, target, self.env.stack)

    @contextlib.contextmanager
    def _snapshots_paused(self) -> Iterator[None]:
        """The ops chart's snapshot agent off for the block (its pods gone), so the newest
        snapshot is the pre-upgrade one; back on afterwards, whatever happened."""
        env = self.env
        deploy.write_stack_values(env)
        self.run_tool(helm_ops(env, snapshots=False))
        try:
            gone = wait_for(
                lambda: not env.api.list_pods(env.namespace, snapshot_agent_selector(env)),
                timeout=env.kube.timeout,
                interval=1.0,
            )
            if not gone:
                raise StackStateError("the snapshot agent's pods did not go after the pause")
            yield
        finally:
            try:
                self.run_tool(helm_ops(env, snapshots=True))
            except VaultdrError as exc:
                self.say(f"the scheduled snapshots were not resumed ({exc.message}): run up")

    # --- 2 and 3 ----------------------------------------------------------------------------
    def _rolling_on_cluster(self, previous: ServerImage, target: ServerImage) -> bool:
        env = self.env
        s = self._rolling_scenario(env, previous, target)
        try:
            token = env.root_token()
            with self._step(s, "Given", f"the {previous.version} cluster is healthy"):
                result = checks.cluster_healthy(env, token)
                if not result.ok:
                    raise VaultdrError(result.detail)
            with self._step(s, "And", f"{SEEDED} secrets are written and a snapshot is taken"):
                self._seed(env, token)
                record = env.snapshot_agent().take()
                self.snapshot = {"key": record.key, "sha256": record.sha256}
            session = DrillSession(env, token=token)
            try:
                with self._step(s, "When", f"the chart renders {target.image}"):
                    self._upgrade_release(target)
                upgrades = self._upgrade_under_load(
                    session,
                    s,
                    lambda say, mark: rolling_replace(
                        env,
                        token,
                        target=target.version,
                        previous=previous.version,
                        revision=self.revision,
                        timeout=self.kube_options.node_timeout,
                        say=say,
                        mark=mark,
                        run=self.run_tool,
                    ),
                )
            except UpgradeFailed as exc:
                return self._failed(env, s, exc, previous, target, token)
            self._judge_rolling(session, s, upgrades, target)
            return True
        finally:
            s.finish()

    def _upgrade_release(self, target: ServerImage) -> None:
        """``helm upgrade`` to the target; a failed one is rolled back and is an UpgradeFailed
        (no pod was replaced yet)."""
        env = self.env
        self.revision = current_revision(env, run=self.run_tool)
        argv = helm_upgrade_server(
            env, version=target.version, chart_version=self.kube_options.chart_version
        )
        try:
            self.run_tool(argv)
        except VaultdrError as exc:
            with contextlib.suppress(VaultdrError):
                self.run_tool(helm_rollback(env, self.revision))
            raise UpgradeFailed(f"`{shlex.join(argv)}` failed: {exc.message}") from None

    def _explain(
        self,
        env: Environment,
        failure: UpgradeFailed,
        previous: EngineRecord,
        target: EngineRecord,
    ) -> str:
        ns = self.env.namespace
        failed = next((u.node for u in failure.upgrades if not u.ok), "")
        look = (
            f" Look at it: kubectl -n {ns} describe pod {failed}; kubectl -n {ns} logs "
            f"{failed} --previous."
            if failed
            else ""
        )
        return (
            f"{failure.message}. The upgrade to {target.version} was undone: helm rollback "
            f"{self.env.kube.release} to revision {self.revision} (the chart and image tag "
            f"{previous.version} it ran before), and every pod already replaced was replaced "
            f"again on {previous.version}.{look}"
        )

    # --- 4 ---------------------------------------------------------------------------------------
    def _restore_pre_upgrade_snapshot(
        self, env: Environment, s: ScenarioDraft, target: EngineRecord
    ) -> None:
        """Total loss, then the ops chart's restore watcher restores the pre-upgrade snapshot
        (the newest: snapshots are paused); the cluster must be healthy again."""
        self._restore_by_watcher(s, target)
        with self._step(s, "And", "every node is unsealed and a voter, one active"):
            token = env.root_token()
            healthy = wait_for(
                lambda: checks.cluster_healthy(env, token).ok,
                timeout=self.kube_options.node_timeout,
                interval=1.0,
            )
            if not healthy:
                raise VaultdrError(checks.cluster_healthy(env, token).detail)

    def _restore_by_watcher(self, s: ScenarioDraft, target: EngineRecord) -> None:
        env, key = self.env, str(self.snapshot.get("key"))
        with self._step(s, "Given", f"every node of the {target.version} cluster loses its data"):
            since = now_iso()
            env.delete_all_volumes()
        with self._step(s, "When", f"the restore watcher restores the pre-upgrade snapshot {key}"):
            found: list[dict[str, Any]] = []

            def restored() -> bool:
                record = env.last_restore()
                if record is not None and str(record.get("started_at", "")) >= since:
                    found.append(record)
                    return True
                return False

            if not wait_for(restored, timeout=self.kube_options.restore_timeout, interval=2.0):
                raise VaultdrError(
                    f"the restore watcher recorded no restore within "
                    f"{self.kube_options.restore_timeout:.0f} s",
                    hint=f"look at its logs: kubectl -n {env.namespace} logs "
                    f"deploy/{env.kube.ops_release}-restore",
                )
            record = found[-1]
            if record.get("snapshot_key") != key:
                raise VaultdrError(
                    f"the restore watcher restored {record.get('snapshot_key')}, not the "
                    f"pre-upgrade snapshot {key}"
                )
            total = float(record.get("total_seconds") or 0.0)
            s.measurements.rto_seconds = round(total, 3)
            s.measurements.restore_phases = dict(record.get("phases") or {})
            s.measurements.snapshot = snapshot_record(
                {**record, "snapshot_sha256": self.snapshot.get("sha256"), "skipped": []}
            )
            s.compare("restore time", total, s.objectives["rto_seconds"])

    def _explanation(
        self,
        scenarios: list[dict[str, Any]],
        passed: bool,
        previous: EngineRecord,
        target: EngineRecord,
    ) -> str:
        said = super()._explanation(scenarios, passed, previous, target)
        if self.removed:
            said += (
                f" Warning: the new chart has no {', '.join(self.removed)}, which our values "
                "set; those settings no longer take effect."
            )
        if passed:
            said += (
                f" The cluster is left on {target.version}: set {IMAGE_TAG_KEY} in "
                f"{deploy.values_file(self.env)} (and kube.chart_version) before the next "
                "`vaultdr up`."
            )
        return said


def run_kube_upgrade_check(
    options: KubeUpgradeOptions,
    env: KubeEnvironment,
    *,
    say: Say = print,
    run: Runner = deploy.run_command,
) -> UpgradeResult:
    return KubeUpgradeCheck(options, env, say=say, run=run).run()
