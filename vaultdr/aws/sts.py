"""AWS STS: who the credentials are, and the web-identity exchange of IRSA."""

from __future__ import annotations

from typing import Any

import boto3  # type: ignore[import-untyped, unused-ignore]
from botocore import UNSIGNED  # type: ignore[import-untyped, unused-ignore]
from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]

from vaultdr.aws._base import AwsBase, AwsCredentials


class StsCalls(AwsBase):
    """The STS calls of :class:`vaultdr.aws.Aws`."""

    def caller_identity(self) -> dict[str, str]:
        """STS ``GetCallerIdentity``: ``Account``, ``Arn`` and ``UserId`` of these credentials."""
        answer = self._call(
            "sts", "GetCallerIdentity", "caller", lambda: self._client("sts").get_caller_identity()
        )
        return {k: str(answer[k]) for k in ("Account", "Arn", "UserId") if k in answer}

    def assume_role_with_web_identity(
        self, role_arn: str, web_identity_token: str, *, session_name: str, seconds: int = 900
    ) -> AwsCredentials:
        """STS ``AssumeRoleWithWebIdentity``: temporary credentials of ``role_arn`` for a
        service-account token (audience ``sts.amazonaws.com``), as IRSA's SDKs get them in a
        pod. The token and the answer are secret: neither is ever put into an error.

        On real AWS the call is unsigned, as botocore sends it (it registers
        ``disable_signing`` for it; a pod has no credentials before it). An emulator
        endpoint gets it signed with this target's credentials: moto, with IAM enforced,
        reads the Authorization header of every request but the few JSON-target
        operations it lists as public (moto/core/authorization.py ``PUBLIC_OPERATIONS``,
        moto/iam/access_control.py ``IAMRequest``) and fails on an unsigned one.
        """
        client = self._signed_sts() if self.target.endpoint_url else self._unsigned_sts()
        answer: Any = self._call(
            "sts",
            "AssumeRoleWithWebIdentity",
            role_arn,
            lambda: client.assume_role_with_web_identity(
                RoleArn=role_arn,
                RoleSessionName=session_name,
                WebIdentityToken=web_identity_token,
                DurationSeconds=seconds,
            ),
            sensitive=True,
        )
        creds = answer["Credentials"]
        return AwsCredentials(
            access_key_id=str(creds["AccessKeyId"]),
            secret_access_key=str(creds["SecretAccessKey"]),
            session_token=str(creds["SessionToken"]),
        )

    def _signed_sts(self) -> Any:
        """An STS client that signs AssumeRoleWithWebIdentity too (for an emulator)."""
        with self._lock:
            client = self._clients.get("sts-signed")
        if client is None:
            client = self._client("sts")
            # botocore registers disable_signing on this very event (botocore/handlers.py
            # BUILTIN_HANDLERS); a handler registered first answers before it: SigV4.
            client.meta.events.register_first(
                "choose-signer.sts.AssumeRoleWithWebIdentity", _sign_v4, unique_id="vaultdr-sign"
            )
            with self._lock:
                self._clients["sts-signed"] = client
        return client

    def _unsigned_sts(self) -> Any:
        """An STS client that signs nothing (AssumeRoleWithWebIdentity needs no credentials)."""
        with self._lock:
            client = self._clients.get("sts-unsigned")
            if client is None:
                client = boto3.session.Session(region_name=self.target.region).client(
                    "sts",
                    endpoint_url=self.target.endpoint_url,
                    config=self._config.merge(Config(signature_version=UNSIGNED)),
                )
                self._clients["sts-unsigned"] = client
            return client


def _sign_v4(**_: Any) -> str:
    return "v4"
