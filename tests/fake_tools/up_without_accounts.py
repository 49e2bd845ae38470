"""``vaultdr up`` without the step that creates stack.yaml's namespaces and service accounts.

tests/test_kind_e2e.py runs this instead of ``vaultdr up`` to show what a real cluster
does to a stack whose accounts nobody created: the product is unchanged, only this
process's plan lacks the one step (``vaultdr.envs.kube.deploy.plan_up``, filtered by
its description), as the code before issue 14 lacked it.
"""

from __future__ import annotations

import sys
from typing import Any

from vaultdr import cli
from vaultdr.envs.kube import deploy

STEP = "create the namespaces and service accounts stack.yaml declares outside"

_plan_up = deploy.plan_up


def plan_up_without_accounts(env: Any) -> list[deploy.Step]:
    steps = _plan_up(env)
    kept = [s for s in steps if not s.description.startswith(STEP)]
    assert len(kept) == len(steps) - 1, "the service-account step was not found"
    return kept


deploy.plan_up = plan_up_without_accounts

if __name__ == "__main__":
    sys.exit(cli.main(["up", *sys.argv[1:]]))
