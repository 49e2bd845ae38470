"""``vaultdr drill --dry-run``: every change a drill would make, printed, nothing made.

It reads the feature files the drill would play (with the same tag expression),
and lists, per scenario, what each Given step writes and every change each When
step's fault makes, as the environment itself describes it (on kind/eks the exact
Kubernetes and IAM requests, computed as a dry run of the fault primitives; nodes
the drill picks at run time are shown as ``<leader>`` / ``<follower>``). The
stack's lifecycle comes first: on local a fresh stack per feature; on kind/eks
the steps of ``vaultdr up`` should the stack not be healthy.

Keep :data:`WHEN_FAULTS` and :data:`GIVEN_CHANGES` in step with ``features/conftest.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from vaultdr import faults
from vaultdr.config import Stack
from vaultdr.envs.kube.deploy import plan_up
from vaultdr.errors import ConfigError

#: The When steps of features/conftest.py and the catalogue fault each injects.
WHEN_FAULTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "every node is killed at once": ("restart-all", ()),
    "the leader is killed": ("kill-leader", ()),
    "a follower's volume is deleted": ("delete-volume", ("follower",)),
    "every volume is deleted": ("delete-all-volumes", ()),
    "KMS access is revoked": ("revoke-kms", ()),
    "a follower restarts": ("kill-node", ("follower",)),
    "KMS access is restored": ("restore-kms", ()),
}
#: The Given steps that write to the stack, and what they write.
GIVEN_CHANGES: dict[str, str] = {
    "a healthy stack": "write secret/apps/web/config (the app's secret) if it is missing",
    "a steady write load": "write about 10 secrets a second (the write ledger) until the end",
    "secrets written before the newest snapshot": "write 50 secrets under secret/drill/<id>/, "
    "then take a snapshot and upload it to S3",
    "a newer snapshot that is corrupt": "take another snapshot, then overwrite it in S3 "
    "with a corrupt copy (undone by deleting that object version)",
}
_KEYWORDS = ("Given", "When", "Then", "And", "But")


@dataclass
class PlannedScenario:
    feature: str
    name: str
    tags: set[str]
    steps: list[tuple[str, str]] = field(default_factory=list)


def read_features(features: Path) -> list[PlannedScenario]:
    """The scenarios of every ``*.feature`` file, with their tags and steps (keyword, text)."""
    scenarios: list[PlannedScenario] = []
    for path in sorted(features.glob("*.feature")):
        feature = path.stem
        feature_tags: set[str] = set()
        pending: set[str] = set()
        keyword = "Given"
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line.startswith("@"):
                pending |= {t.lstrip("@") for t in line.split()}
            elif line.startswith("Feature:"):
                feature, feature_tags, pending = line.partition(":")[2].strip(), pending, set()
            elif line.startswith(("Scenario:", "Scenario Outline:")):
                name = line.partition(":")[2].strip()
                scenarios.append(PlannedScenario(feature, name, feature_tags | pending))
                pending = set()
            elif scenarios and line.split(" ", 1)[0] in _KEYWORDS:
                word, _, text = line.partition(" ")
                keyword = keyword if word in ("And", "But") else word
                scenarios[-1].steps.append((keyword, text.strip()))
    return scenarios


def matches(tags: set[str], expression: str | None) -> bool:
    """pytest's ``-m`` on the tags: ``and``, ``or``, ``not`` and parentheses."""
    if not expression:
        return True
    tokens = re.findall(r"\(|\)|[^\s()]+", expression)
    python = []
    for token in tokens:
        if token in ("and", "or", "not", "(", ")"):
            python.append(token)
        else:
            python.append(str(token in tags))
    try:
        # Only True, False, and, or, not and parentheses reach eval.
        return bool(eval(" ".join(python), {"__builtins__": {}}, {}))
    except SyntaxError:
        raise ConfigError(f"--tags {expression!r} is not a valid tag expression") from None


def plan_drill(
    stack: Stack,
    env_name: str,
    features: Path,
    *,
    tags: str | None = None,
    env: faults.FaultTarget | None = None,
) -> list[str]:
    """The lines ``vaultdr drill --dry-run`` prints."""
    lines = []
    if env_name == "local":
        lines.append("per feature: start a fresh local stack (vaultdr up), stop it after (down)")
    else:
        lines.append(f"{env_name}: unless the stack is healthy, `vaultdr up --env {env_name}`:")
        lines += [f"  {step.show()}" for step in plan_up(env)]  # type: ignore[arg-type]
    for scenario in read_features(features):
        if not matches(scenario.tags, tags):
            continue
        lines.append(f"{scenario.feature}: {scenario.name}")
        for keyword, text in scenario.steps:
            if keyword == "Given" and text in GIVEN_CHANGES:
                lines.append(f"  Given {text}: {GIVEN_CHANGES[text]}")
            elif keyword == "When" and text in WHEN_FAULTS:
                name, args = WHEN_FAULTS[text]
                lines.append(f"  When {text}: fault {' '.join([name, *args])}")
                lines += [f"    {change}" for change in describe(env, stack, name, args)]
        lines.append("  then: roll back whatever is still in force (vaultdr rollback)")
    return lines


def describe(
    env: faults.FaultTarget | None, stack: Stack, name: str, args: tuple[str, ...]
) -> list[str]:
    """The changes of one fault, without resolving nodes against a running stack.

    With an environment (kind/eks) they are its own recorded requests; without one
    (local, where every feature gets a fresh stack) the catalogue's summary."""
    fault = faults.get_fault(name)
    nodes = [f"<{a}>" for a in args]
    if name == "kill-leader":
        nodes = ["<leader>"]
    if env is not None:
        if name in ("restart-all", "delete-all-volumes"):
            nodes = env.node_names()
        return faults.describe(env, fault, nodes)
    where = f" on {', '.join(nodes or stack.node_names())}" if name != "revoke-kms" else ""
    return [f"{fault.summary}{where}"]
