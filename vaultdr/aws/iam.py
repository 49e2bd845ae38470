"""AWS IAM: users, access keys and inline policies of users and roles."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from vaultdr.aws._base import AwsBase, AwsCredentials, _Absent


class IamCalls(AwsBase):
    """The IAM calls of :class:`vaultdr.aws.Aws`: users, access keys, inline policies."""

    def create_user(self, user: str) -> str:
        """IAM ``CreateUser``; returns the user's ARN."""
        answer = self._call(
            "iam", "CreateUser", user, lambda: self._client("iam").create_user(UserName=user)
        )
        return str(answer["User"]["Arn"])

    def create_access_key(self, user: str) -> AwsCredentials:
        """IAM ``CreateAccessKey``; the secret exists only in the returned value."""
        answer = self._call(
            "iam",
            "CreateAccessKey",
            user,
            lambda: self._client("iam").create_access_key(UserName=user),
            sensitive=True,
        )
        key = answer["AccessKey"]
        return AwsCredentials(
            access_key_id=str(key["AccessKeyId"]), secret_access_key=str(key["SecretAccessKey"])
        )

    def list_user_policies(self, user: str) -> list[str]:
        """IAM ``ListUserPolicies`` (all pages): the names of ``user``'s inline policies."""
        names: list[str] = []
        for page in self._pages(
            "iam", "ListUserPolicies", user, "list_user_policies", UserName=user
        ):
            names.extend(str(n) for n in page.get("PolicyNames", []))
        return names

    # Inline policies of a user or a role: the same three IAM calls for either kind of
    # principal (PutUserPolicy / PutRolePolicy, and so on).
    def put_user_policy(self, user: str, name: str, document: Mapping[str, Any]) -> None:
        """IAM ``PutUserPolicy``: create or replace the inline policy ``name`` of ``user``."""
        self._put_inline_policy("User", user, name, document)

    def delete_user_policy(self, user: str, name: str) -> None:
        """IAM ``DeleteUserPolicy``; a policy that is already absent is not an error."""
        self._delete_inline_policy("User", user, name)

    def get_user_policy(self, user: str, name: str) -> dict[str, Any] | None:
        """IAM ``GetUserPolicy``: the inline policy document, or None if there is none."""
        return self._get_inline_policy("User", user, name)

    def put_role_policy(self, role: str, name: str, document: Mapping[str, Any]) -> None:
        """IAM ``PutRolePolicy``: create or replace the inline policy ``name`` of ``role``."""
        self._put_inline_policy("Role", role, name, document)

    def delete_role_policy(self, role: str, name: str) -> None:
        """IAM ``DeleteRolePolicy``; a policy that is already absent is not an error."""
        self._delete_inline_policy("Role", role, name)

    def get_role_policy(self, role: str, name: str) -> dict[str, Any] | None:
        """IAM ``GetRolePolicy``: the inline policy document, or None if there is none."""
        return self._get_inline_policy("Role", role, name)

    def _inline_policy_call(
        self, kind: str, verb: str, principal: str, name: str, **extra: Any
    ) -> Callable[[], Any]:
        method = f"{verb}_{kind.lower()}_policy"  # e.g. put_user_policy, get_role_policy
        arguments = {f"{kind}Name": principal, "PolicyName": name, **extra}
        return lambda: getattr(self._client("iam"), method)(**arguments)

    def _put_inline_policy(
        self, kind: str, principal: str, name: str, document: Mapping[str, Any]
    ) -> None:
        call = self._inline_policy_call(
            kind, "put", principal, name, PolicyDocument=json.dumps(document)
        )
        self._call("iam", f"Put{kind}Policy", f"{principal}/{name}", call)

    def _delete_inline_policy(self, kind: str, principal: str, name: str) -> None:
        call = self._inline_policy_call(kind, "delete", principal, name)
        with contextlib.suppress(_Absent):
            self._call(
                "iam",
                f"Delete{kind}Policy",
                f"{principal}/{name}",
                call,
                absent=frozenset({"NoSuchEntity"}),
            )

    def _get_inline_policy(self, kind: str, principal: str, name: str) -> dict[str, Any] | None:
        call = self._inline_policy_call(kind, "get", principal, name)
        try:
            answer = self._call(
                "iam",
                f"Get{kind}Policy",
                f"{principal}/{name}",
                call,
                absent=frozenset({"NoSuchEntity"}),
            )
        except _Absent:
            return None
        document = answer["PolicyDocument"]
        if isinstance(document, str):  # botocore usually decodes it; be lenient
            document = json.loads(unquote(document))
        return dict(document)
