"""AWS STS: who the credentials are."""

from __future__ import annotations

from vaultdr.aws._base import AwsBase


class StsCalls(AwsBase):
    """The STS calls of :class:`vaultdr.aws.Aws`."""

    def caller_identity(self) -> dict[str, str]:
        """STS ``GetCallerIdentity``: ``Account``, ``Arn`` and ``UserId`` of these credentials."""
        answer = self._call(
            "sts", "GetCallerIdentity", "caller", lambda: self._client("sts").get_caller_identity()
        )
        return {k: str(answer[k]) for k in ("Account", "Arn", "UserId") if k in answer}
