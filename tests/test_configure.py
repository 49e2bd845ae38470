"""Config-as-code against a real cluster: idempotent, dry-run changes nothing, purge, re-apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import LOCAL_STACK
from vaultdr.agents.configure import reconcile
from vaultdr.config import Stack, parse_stack
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.tls import LocalCA
from vaultdr.errors import VaultApiError

pytestmark = pytest.mark.stack


def shipped_with(**changes: object) -> Stack:
    data = yaml.safe_load(LOCAL_STACK.read_text())
    data.update(changes)
    return parse_stack(data)


def configure_section(**changes: object) -> dict[str, object]:
    section = dict(yaml.safe_load(LOCAL_STACK.read_text())["configure"])
    section.update(changes)
    return section


def test_a_second_run_reports_no_changes(awskms_stack: LocalEnvironment) -> None:
    awskms_stack.configure()
    assert awskms_stack.configure() == []


def test_dry_run_reports_what_it_would_change_and_changes_nothing(
    awskms_stack: LocalEnvironment,
) -> None:
    env = awskms_stack
    policies = dict(env.stack_config().configure.policies)
    policies["audit-reader"] = 'path "sys/audit" { capabilities = ["read"] }\n'
    stack = shipped_with(configure=configure_section(policies=policies))
    root = env.client(token=env.root_token())
    changes = reconcile(root, stack, kubernetes=env.kubernetes_target(), dry_run=True)
    assert [str(c) for c in changes] == ["create  policy audit-reader"]
    assert root.read("sys/policies/acl/audit-reader") is None


def test_purge_removes_policies_and_roles_that_are_no_longer_declared(
    awskms_stack: LocalEnvironment,
) -> None:
    env = awskms_stack
    root = env.client(token=env.root_token())
    root.write("sys/policies/acl/leftover", {"policy": 'path "x/*" { capabilities = ["read"] }'})
    root.write(
        "auth/kubernetes/role/leftover",
        {"bound_service_account_names": ["x"], "bound_service_account_namespaces": ["x"]},
    )
    keep = reconcile(root, env.stack_config(), kubernetes=env.kubernetes_target())
    assert keep == []  # purge is off in the shipped stack: nothing undeclared is touched
    assert root.read("sys/policies/acl/leftover") is not None

    purging = shipped_with(configure=configure_section(purge=True))
    changes = {str(c) for c in reconcile(root, purging, kubernetes=env.kubernetes_target())}
    assert changes == {"delete  policy leftover", "delete  kubernetes role (kubernetes) leftover"}
    assert root.read("sys/policies/acl/leftover") is None
    assert root.read("auth/kubernetes/role/leftover") is None
    assert root.read("sys/policies/acl/vaultdr-snapshot") is not None
    assert root.read("sys/policies/acl/default") is not None
    assert reconcile(root, purging, kubernetes=env.kubernetes_target()) == []


def test_a_changed_role_is_updated_in_place(awskms_stack: LocalEnvironment) -> None:
    env = awskms_stack
    root = env.client(token=env.root_token())
    root.write("auth/kubernetes/role/web", {"token_ttl": 60})
    changes = [str(c) for c in env.configure()]
    assert changes == ["update  kubernetes role (kubernetes) web"]
    assert root.read("auth/kubernetes/role/web")["data"]["token_ttl"] == 3600  # type: ignore[index]


def test_the_kubernetes_auth_config_is_reapplied_after_a_restore_carried_old_values(
    awskms_stack: LocalEnvironment, tmp_path: Path
) -> None:
    env = awskms_stack
    root = env.client(token=env.root_token())
    # What a snapshot from another cluster carries: its API host and CA.
    root.write(
        "auth/kubernetes/config",
        {
            "kubernetes_host": "https://127.0.0.1:1",
            "kubernetes_ca_cert": LocalCA(tmp_path / "old-ca").cert_path.read_text(),
            "disable_local_ca_jwt": True,
        },
    )
    jwt = env.service_account_token("apps", "web")
    with pytest.raises(VaultApiError):
        env.client().login_kubernetes(role="web", jwt=jwt)
    changes = [str(c) for c in env.configure()]
    assert changes == [f"apply   kubernetes auth config (kubernetes) -> {env.state.kubeapi['url']}"]
    assert env.client().login_kubernetes(role="web", jwt=jwt)


def test_the_configure_command_reports_its_changes(
    awskms_stack: LocalEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    from vaultdr.cli import main

    root = awskms_stack.client(token=awskms_stack.root_token())
    root.delete("sys/policies/acl/app-batch")
    state = ["--state-dir", str(awskms_stack.state_dir)]
    assert main(["configure", "--dry-run", *state]) == 0
    assert "create  policy app-batch" in capsys.readouterr().out
    assert root.read("sys/policies/acl/app-batch") is None
    assert main(["configure", *state]) == 0
    assert "configure made 1 change(s)" in capsys.readouterr().out
    assert root.read("sys/policies/acl/app-batch") is not None
