"""Diagnostics of a failed kube drill: pod logs, events and status into the evidence, no secret.

The Kubernetes API is the fake of tests/fake_kube.py (over real HTTP, the official
client parsing its answers): pod logs with the kubelet's 400 for a container that
never restarted, events, the StatefulSet and the PVCs. A drill is played by the real
drill plugin on a generated feature (pytester), its evidence validated and sealed.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.fake_kube import FakeCluster, FakeKubeApi
from vaultdr.config import Kube, Stack
from vaultdr.envs.diagnostics import REDACTED, DiagnosticsWriter, redact, tail_text
from vaultdr.envs.kube.clusters import KindEnvironment
from vaultdr.envs.kube.env import DIAGNOSTICS_TAIL_LINES, KubeEnvironment
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.evidence.manifest import seal_run, verify_manifest
from vaultdr.evidence.models import SCHEMA_FILE
from vaultdr.evidence.schema import load_evidence
from vaultdr.session import DrillSession

REPO = Path(__file__).resolve().parent.parent
NS = "vaultdr"

#: Secret-shaped values planted in the fake logs and events; none may reach a file.
ROOT_TOKEN = "hvs.CAESIKp0PlantedRootTokenValue0123456789abcdefGh4KHGh2cy5"
SECRETS = {
    "service token": "s.3kPAOgNFnnIa4RW4j2TScqDj",
    "batch token": "hvb.AAAAAQJt2PlantedBatchTokenValue0123456789xyz",
    "recovery key": "cSvvQ5u9Uj3fYxWnC0hV2t1mQ6T/b5kK8e+7r0OZq2Ud",
    "hex recovery key": "71c9a5e0f4b2d3869a7c1e5f0b8d2a4c6e9f1b3d5a7c9e1f3b5d7a9c1e3f5b7d9a",
    "service account jwt": "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl",
    "aws secret key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "root token": ROOT_TOKEN,
}
SERVER_LOG = (
    "==> OpenBao server configuration:\n"
    "2026-12-01T10:00:00.000Z [INFO]  core: vault is unsealed\n"
    "2026-12-01T10:00:01.000Z [INFO]  core: entering standby mode\n"
)
PREVIOUS_LOG = (
    "2026-12-01T09:59:00.000Z [INFO]  storage.raft: opening bolt database\n"
    "2026-12-01T09:59:01.000Z [ERROR] core: failed to open raft storage: timeout\n"
)
AGENT_LOG = (
    "2026-12-01T10:00:02Z ERROR snapshot: login failed for token "
    f"{SECRETS['service token']} (batch {SECRETS['batch token']})\n"
    f"2026-12-01T10:00:03Z DEBUG jwt {SECRETS['service account jwt']}\n"
    f"2026-12-01T10:00:04Z DEBUG recovery key {SECRETS['recovery key']} / "
    f"{SECRETS['hex recovery key']}\n"
    f"2026-12-01T10:00:05Z DEBUG AWS_SECRET_ACCESS_KEY={SECRETS['aws secret key']}\n"
    f"2026-12-01T10:00:06Z DEBUG the root token is {ROOT_TOKEN}\n"
    "2026-12-01T10:00:07Z INFO snapshot: upload snapshots/vaultdr-kind/x.snap done\n"
)


def agent_pod(cluster: FakeCluster, component: str) -> dict[str, Any]:
    """An ops-chart agent pod, labelled as environments/chart/vaultdr-ops/templates/
    _helpers.tpl (``vaultdr-ops.podMetadata``) labels it."""
    pod = copy.deepcopy(cluster.pod(0))
    name = f"vaultdr-ops-{component}-6c9f7d8b5-x2x4q"
    pod["metadata"].update(
        name=name,
        generateName=f"vaultdr-ops-{component}-6c9f7d8b5-",
        labels={
            "app.kubernetes.io/name": "vaultdr-ops",
            "app.kubernetes.io/instance": "vaultdr-ops",
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "vaultdr",
            "pod-template-hash": "6c9f7d8b5",
        },
        ownerReferences=[],
    )
    pod["spec"]["containers"][0]["name"] = component
    pod["spec"]["volumes"] = []
    pod["status"]["containerStatuses"][0]["name"] = component
    return pod


def failing_cluster() -> FakeCluster:
    """The cluster of a drill that failed: openbao-1 crash-looped once (a previous log),
    the snapshot agent logged secrets, events happened out of name order."""
    cluster = FakeCluster(namespace=NS)
    cluster.populate()
    for i in range(3):
        cluster.logs[(f"openbao-{i}", "openbao")] = SERVER_LOG
    cluster.restart_container("openbao-1", "openbao", PREVIOUS_LOG)
    for component in ("snapshot", "restore"):
        pod = agent_pod(cluster, component)
        cluster.put("pods", NS, pod["metadata"]["name"], pod)
        cluster.logs[(pod["metadata"]["name"], component)] = AGENT_LOG
    cluster.add_event(
        "a-late",
        kind="Pod",
        obj="openbao-1",
        reason="BackOff",
        message="Back-off restarting failed container openbao in pod openbao-1",
        at="2026-12-01T10:00:09Z",
        type_="Warning",
    )
    cluster.add_event(
        "z-early",
        kind="Pod",
        obj="openbao-1",
        reason="Killing",
        message=f"Stopping container openbao (token {SECRETS['service token']})",
        at="2026-12-01T09:59:30Z",
    )
    return cluster


@pytest.fixture
def cluster() -> FakeCluster:
    return failing_cluster()


def kind_env(tmp_path: Path, kube_api: FakeKubeApi) -> KubeEnvironment:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    stack = Stack(cluster="vaultdr-kind", kube=Kube())
    return KindEnvironment(tmp_path / "state", stack, kubeconfig=str(kubeconfig))


def every_text(directory: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(directory.rglob("*")) if p.is_file())


def log_queries(cluster: FakeCluster) -> list[dict[str, list[str]]]:
    return [r.query for r in cluster.requests if r.path.endswith("/log")]


# --- the collection ------------------------------------------------------------------------------
def test_every_server_pod_log_is_kept_and_the_previous_one_only_where_a_container_restarted(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    found = kind_env(tmp_path, kube_api).diagnostics(tmp_path / "diag")
    server = tmp_path / "diag" / "server"
    for i in range(3):
        assert (server / f"openbao-{i}" / "openbao.log").read_text() == SERVER_LOG
    assert (server / "openbao-1" / "openbao.previous.log").read_text() == PREVIOUS_LOG
    assert not (server / "openbao-0" / "openbao.previous.log").exists()
    assert found.errors == []  # a 400 for "no previous container" is not a failure
    assert "server/openbao-1/openbao.previous.log" in found.files
    previous = [q for q in log_queries(cluster) if q.get("previous") == ["true"]]
    assert len(previous) == 3 + 2  # asked of every container, answered 400 where none
    assert all(q["tailLines"] == [str(DIAGNOSTICS_TAIL_LINES)] for q in log_queries(cluster))
    assert all("limitBytes" in q for q in log_queries(cluster))
    assert not cluster.mutations()  # read only


def test_the_ops_agents_logs_are_found_by_the_charts_labels_and_kept_redacted(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    kind_env(tmp_path, kube_api).diagnostics(tmp_path / "diag")
    agents = tmp_path / "diag" / "agents"
    pods = json.loads((agents / "pods.json").read_text())
    assert [p["labels"]["app.kubernetes.io/component"] for p in pods] == ["restore", "snapshot"]
    log = (agents / "vaultdr-ops-snapshot-6c9f7d8b5-x2x4q" / "snapshot.log").read_text()
    assert "upload snapshots/vaultdr-kind/x.snap done" in log
    assert log.count(REDACTED) >= 6


def test_no_secret_shaped_value_reaches_any_diagnostics_file(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    found = kind_env(tmp_path, kube_api).diagnostics(tmp_path / "diag", known_secrets=[ROOT_TOKEN])
    text = every_text(tmp_path / "diag")
    assert found.files and "agents/pods.json" in found.files
    leaked = [name for name, value in SECRETS.items() if value in text]
    assert leaked == []


def test_events_are_kept_oldest_first_and_the_statefulset_and_pvcs_status_beside_them(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    cluster.delete_pvc(NS, "data-openbao-2")  # held by pvc-protection: Terminating
    kind_env(tmp_path, kube_api).diagnostics(tmp_path / "diag")
    events = (tmp_path / "diag" / "events.txt").read_text().splitlines()
    assert [line.split()[2] for line in events[1:]] == ["Killing", "BackOff"]
    assert "Pod/openbao-1" in events[2] and "Warning" in events[2]
    sts = json.loads((tmp_path / "diag" / "statefulset.json").read_text())
    assert sts["spec"]["replicas"] == 3 and sts["status"]["readyReplicas"] == 3
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert "template" not in sts["spec"]  # env values stay out
    pvcs = {p["name"]: p for p in json.loads((tmp_path / "diag" / "pvcs.json").read_text())}
    assert pvcs["data-openbao-2"]["deleting"] is True
    assert pvcs["data-openbao-2"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert pvcs["data-openbao-0"]["phase"] == "Bound"
    pods = json.loads((tmp_path / "diag" / "server" / "pods.json").read_text())
    restarted = next(p for p in pods if p["name"] == "openbao-1")
    assert restarted["status"]["containerStatuses"][0]["restartCount"] == 1


def test_a_failing_api_is_noted_and_nothing_raises(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    cluster.diagnostics_failure = 500
    found = kind_env(tmp_path, kube_api).diagnostics(tmp_path / "diag")
    assert any(e.startswith("events: list events in vaultdr failed: 500") for e in found.errors)
    assert any("log server/openbao-0/openbao.log" in e and "500" in e for e in found.errors)
    assert (tmp_path / "diag" / "statefulset.json").exists()  # what could be read, was
    assert "errors.txt" in found.files


def test_an_unreachable_api_is_noted_too(tmp_path: Path, kube_api: FakeKubeApi) -> None:
    env = kind_env(tmp_path, kube_api)
    kube_api.stop()
    found = env.diagnostics(tmp_path / "diag")
    assert found.files == ["errors.txt"]
    assert all("cannot talk to the Kubernetes API" in e for e in found.errors)


def test_each_log_is_bounded_to_its_end(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    cluster.logs[("openbao-0", "openbao")] = "".join(f"line {n}\n" for n in range(5000))
    kind_env(tmp_path, kube_api).diagnostics(tmp_path / "diag")
    kept = (tmp_path / "diag" / "server" / "openbao-0" / "openbao.log").read_text().splitlines()
    assert len(kept) == DIAGNOSTICS_TAIL_LINES and kept[-1] == "line 4999"
    cut = tail_text("x" * 50 + "\n" + "y" * 10 + "\n", max_bytes=20)
    assert cut.startswith("[... 51 bytes cut") and cut.endswith("y" * 10 + "\n")


def test_redaction_keeps_digests_and_api_paths_and_drops_known_values() -> None:
    digest, commit = "a" * 64, "b" * 40
    text = f"sha256 {digest} commit {commit} GET /v1/sys/storage/raft/snapshot-auto/config ok"
    assert redact(text) == text
    assert redact("password is hunter2-correct-horse", known=["hunter2-correct-horse"]) == (
        f"password is {REDACTED}"
    )


def test_the_local_environment_keeps_the_end_of_its_log_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "supervisor.log").write_text(f"node-0 exited\nroot token {ROOT_TOKEN}\n")
    found = LocalEnvironment(state).diagnostics(tmp_path / "diag")
    assert found.files == ["supervisor.log"]  # no state.json: no nodes, no events file
    kept = (tmp_path / "diag" / "supervisor.log").read_text()
    assert "node-0 exited" in kept and ROOT_TOKEN not in kept


def test_a_writer_that_cannot_write_notes_it(tmp_path: Path) -> None:
    blocker = tmp_path / "diag"
    blocker.write_text("a file where the directory should be")
    writer = DiagnosticsWriter(blocker)
    writer.text("events.txt", "x")
    assert writer.result.files == [] and writer.result.errors[0].startswith("write events.txt")


# --- the session and the drill -------------------------------------------------------------------
class BrokenEnvironment:
    """An environment whose diagnostics blow up in a way nobody planned for."""

    name = "kind"

    def diagnostics(self, dest: Path, *, known_secrets: Any = ()) -> Any:
        raise RuntimeError(f"boom near {ROOT_TOKEN}")


def test_a_collection_that_raises_is_recorded_as_an_error_and_raises_nothing(
    tmp_path: Path,
) -> None:
    session = DrillSession(BrokenEnvironment(), token=ROOT_TOKEN)  # type: ignore[arg-type]
    record = session.collect_diagnostics(tmp_path, "leader-loss")
    assert record.files == [] and record.directory == "diagnostics/leader-loss"
    assert record.errors == [f"the collection failed: RuntimeError: boom near {REDACTED}"]


def test_two_failed_scenarios_with_one_id_get_their_own_directories(
    tmp_path: Path, kube_api: FakeKubeApi
) -> None:
    session = DrillSession(kind_env(tmp_path, kube_api), token=ROOT_TOKEN)
    first = session.collect_diagnostics(tmp_path / "run", "kms revoked/1")
    second = session.collect_diagnostics(tmp_path / "run", "kms revoked/1")
    assert (first.directory, second.directory) == (
        "diagnostics/kms-revoked-1",
        "diagnostics/kms-revoked-1-2",
    )
    assert "diagnostics/kms-revoked-1/events.txt" in first.files
    assert all((tmp_path / "run" / f).is_file() for f in first.files + second.files)


DRILL_CONFTEST = """
import os
from pathlib import Path

import pytest
from pytest_bdd import given, then

from tests.fake_kube import FakeKubeApi
from tests.test_kube_diagnostics import ROOT_TOKEN, failing_cluster
from vaultdr.config import Kube, Stack
from vaultdr.drill.plugin import RUN_KEY
from vaultdr.drill.scenario import ScenarioRun
from vaultdr.envs.kube.clusters import KindEnvironment


@pytest.fixture
def run(request, tmp_path):
    cluster = failing_cluster()
    if os.environ.get("FAKE_API_FAILS"):
        cluster.diagnostics_failure = int(os.environ["FAKE_API_FAILS"])
    api = FakeKubeApi(cluster)
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    env = KindEnvironment(
        tmp_path / "state", Stack(cluster="vaultdr-kind", kube=Kube()), kubeconfig=str(kubeconfig)
    )
    scenario = ScenarioRun(env, env.stack, "leader-loss")
    scenario._token = ROOT_TOKEN  # as read from SSM by the scenario's first step
    request.node.stash[RUN_KEY] = scenario
    yield scenario
    scenario.stop()
    api.stop()


@given("a stack")
def a_stack(run):
    pass


@then("a new leader serves")
def never_serves(run):
    raise AssertionError("not recovered within 30 s: never reached auth_ready")


@then("nothing is wrong")
def fine(run):
    pass
"""

DRILL_FEATURE = """Feature: Leader loss
  @leader-loss
  Scenario: the leader is killed
    Given a stack
    Then a new leader serves

  @leader-loss
  Scenario: nothing happens
    Given a stack
    Then nothing is wrong
"""


def play_drill(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **environ: str
) -> tuple[Any, Path]:
    pytester.makeconftest(DRILL_CONFTEST)
    pytester.makefile(".feature", leader_loss=DRILL_FEATURE)
    pytester.makepyfile(
        test_leader_loss='from pytest_bdd import scenarios\n\nscenarios("leader_loss.feature")\n'
    )
    run_dir = tmp_path / "20261201T100000Z-abcdef"
    run_dir.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("VAULTDR_DRILL_DIR", str(run_dir))
    monkeypatch.setenv("VAULTDR_DRILL_RUN_ID", run_dir.name)
    monkeypatch.setenv("VAULTDR_DRILL_ENV", "kind")
    monkeypatch.delenv("VAULTDR_DRILL_CONFIG", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    result = pytester.runpytest_subprocess(
        "-p", "vaultdr.drill.plugin", "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning"
    )
    return result, run_dir


def test_a_failed_kube_scenario_leaves_its_diagnostics_in_the_sealed_evidence(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, run_dir = play_drill(pytester, tmp_path, monkeypatch)
    assert result.ret == 1, result.stdout.str()
    evidence = load_evidence(run_dir)
    jsonschema.validate(evidence, json.loads(SCHEMA_FILE.read_text()))
    failed, passed = evidence["scenarios"]
    assert failed["verdict"] == "failed" and passed["verdict"] == "passed"
    assert "diagnostics" not in passed  # only a failure collects
    diagnostics = failed["diagnostics"]
    assert diagnostics["directory"] == "diagnostics/leader-loss"
    assert diagnostics["errors"] == []
    expected = {
        "diagnostics/leader-loss/events.txt",
        "diagnostics/leader-loss/statefulset.json",
        "diagnostics/leader-loss/pvcs.json",
        "diagnostics/leader-loss/server/openbao-1/openbao.log",
        "diagnostics/leader-loss/server/openbao-1/openbao.previous.log",
        "diagnostics/leader-loss/agents/vaultdr-ops-snapshot-6c9f7d8b5-x2x4q/snapshot.log",
    }
    assert expected <= set(diagnostics["files"])
    manifest = seal_run(run_dir).read_text()
    assert all(f"  {name}\n" in manifest for name in diagnostics["files"])
    assert verify_manifest(run_dir) == []
    assert "<code>diagnostics/leader-loss/</code>" in (run_dir / "report.html").read_text()
    assert not [name for name, value in SECRETS.items() if value in every_text(run_dir)]


def test_a_failed_collection_changes_neither_the_verdict_nor_the_exit_status(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, run_dir = play_drill(pytester, tmp_path, monkeypatch, FAKE_API_FAILS="500")
    assert result.ret == 1, result.stdout.str()
    result.assert_outcomes(passed=1, failed=1)
    evidence = load_evidence(run_dir)
    failed, passed = evidence["scenarios"]
    assert (failed["verdict"], passed["verdict"], evidence["verdict"]) == (
        "failed",
        "passed",
        "failed",
    )
    assert failed["error"] == failed["steps"][1]["error"]
    assert "never reached auth_ready" in failed["error"]
    errors = failed["diagnostics"]["errors"]
    assert errors and all("500" in e for e in errors if "failed" in e)
    assert os.path.isfile(run_dir / failed["diagnostics"]["directory"] / "errors.txt")


# --- the kind workflow and cluster ---------------------------------------------------------------
#: kind v0.29.0's default node image: kubernetes-sigs/kind pkg/apis/config/defaults/image.go at
#: the v0.29.0 tag.
KIND_V0_29_NODE_IMAGE = (
    "kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f"
)


def load_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def test_a_failed_kind_job_exports_the_clusters_logs_into_the_uploaded_reports() -> None:
    steps = load_yaml(REPO / ".github/workflows/drill-kind.yml")["jobs"]["drill"]["steps"]
    runs = [step.get("run", "") for step in steps]
    export = next(i for i, run in enumerate(runs) if run.startswith("kind export logs"))
    drill = next(i for i, run in enumerate(runs) if "vaultdr drill --env kind" in run)
    upload = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/upload-"))
    teardown = next(i for i, run in enumerate(runs) if "vaultdr down --env kind" in run)
    assert drill < export < upload < teardown  # before the cluster is gone
    assert steps[export]["if"] == "failure()"
    assert runs[export].split()[3].startswith(steps[upload]["with"]["path"])  # reports/...
    assert "--name vaultdr" in runs[export]
    # ... and redacted before the upload, with the command this repository provides.
    exported = runs[export].split()[3]
    assert f"-m vaultdr.envs.diagnostics --redact-tree {exported}" in runs[export]
    assert steps[upload]["if"] == "always()"
    kind = next(s for s in steps if s.get("uses", "").startswith("helm/kind-action"))
    assert kind["with"]["version"] == "v0.29.0"


def test_every_kind_node_runs_the_pinned_node_image_of_that_kind_release() -> None:
    nodes = load_yaml(REPO / "environments/kind/kind-config.yaml")["nodes"]
    assert nodes and all(node.get("image") == KIND_V0_29_NODE_IMAGE for node in nodes)


def test_logs_left_when_the_collection_runs_out_of_time_are_skipped_and_noted(
    tmp_path: Path,
) -> None:
    writer = DiagnosticsWriter(tmp_path / "diag", deadline=0.0)
    assert writer.out_of_time("log server/openbao-0/openbao.log")
    assert writer.finish().errors == [
        "log server/openbao-0/openbao.log: skipped: the collection ran out of its 0 s"
    ]


def test_an_exported_log_tree_is_redacted_in_place(tmp_path: Path) -> None:
    """What the kind workflow runs over `kind export logs`: every text file redacted, a
    file that is not text dropped (it cannot be checked), clean files left as they are."""
    import subprocess
    import sys

    tree = tmp_path / "kind-logs" / "vaultdr-worker" / "containers"
    tree.mkdir(parents=True)
    token = "hvs." + "A1b2C3d4" * 3
    (tree / "agent.log").write_text(f"logged in with {token}\nsnapshot ok\n")
    (tree / "clean.log").write_text("raft: election won\n")
    (tree / "core.bin").write_bytes(b"\xff\xfe\x00binary")
    done = subprocess.run(
        [sys.executable, "-m", "vaultdr.envs.diagnostics", "--redact-tree", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    agent = (tree / "agent.log").read_text()
    assert token not in agent and "snapshot ok" in agent
    assert (tree / "clean.log").read_text() == "raft: election won\n"
    assert not (tree / "core.bin").exists()
    missing = subprocess.run(
        [sys.executable, "-m", "vaultdr.envs.diagnostics", "--redact-tree", str(tmp_path / "no")],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
