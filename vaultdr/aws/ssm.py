"""AWS SSM Parameter Store: the break-glass material, as SecureString."""

from __future__ import annotations

import contextlib

from vaultdr.aws._base import AwsBase, _Absent


class SsmCalls(AwsBase):
    """The SSM Parameter Store calls of :class:`vaultdr.aws.Aws` (SecureString only)."""

    def put_secure_parameter(self, name: str, value: str, *, overwrite: bool = True) -> None:
        """SSM ``PutParameter`` as a ``SecureString`` (encrypted with the account's SSM key)."""
        self._call(
            "ssm",
            "PutParameter",
            name,
            lambda: self._client("ssm").put_parameter(
                Name=name, Value=value, Type="SecureString", Overwrite=overwrite
            ),
            sensitive=True,
        )

    def get_secure_parameter(self, name: str) -> str:
        """SSM ``GetParameter`` with decryption: the plaintext value (keep it out of logs)."""
        answer = self._call(
            "ssm",
            "GetParameter",
            name,
            lambda: self._client("ssm").get_parameter(Name=name, WithDecryption=True),
            sensitive=True,
        )
        return str(answer["Parameter"]["Value"])

    def delete_parameter(self, name: str) -> None:
        """SSM ``DeleteParameter``; a parameter that is already absent is not an error."""
        with contextlib.suppress(_Absent):
            self._call(
                "ssm",
                "DeleteParameter",
                name,
                lambda: self._client("ssm").delete_parameter(Name=name),
                absent=frozenset({"ParameterNotFound"}),
            )

    def parameter_exists(self, name: str) -> bool:
        """SSM ``GetParameter`` without decryption: True when ``name`` exists."""
        try:
            self._call(
                "ssm",
                "GetParameter",
                name,
                lambda: self._client("ssm").get_parameter(Name=name, WithDecryption=False),
                sensitive=True,
                absent=frozenset({"ParameterNotFound"}),
            )
        except _Absent:
            return False
        return True
