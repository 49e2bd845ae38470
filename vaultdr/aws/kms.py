"""AWS KMS: the seal key and what the seal and the snapshots do with it."""

from __future__ import annotations

from typing import Any

from vaultdr.aws._base import AwsBase
from vaultdr.errors import AwsError


class KmsCalls(AwsBase):
    """The KMS calls of :class:`vaultdr.aws.Aws`: keys, aliases, encrypt and decrypt."""

    def create_key(self, description: str) -> str:
        """KMS ``CreateKey`` (symmetric, ENCRYPT_DECRYPT); returns the key id."""
        answer = self._call(
            "kms",
            "CreateKey",
            description,
            lambda: self._client("kms").create_key(
                Description=description,
                KeySpec="SYMMETRIC_DEFAULT",
                KeyUsage="ENCRYPT_DECRYPT",
            ),
        )
        return str(answer["KeyMetadata"]["KeyId"])

    def create_alias(self, alias: str, key_id: str) -> None:
        """KMS ``CreateAlias``: ``alias`` (``alias/...``) names ``key_id``."""
        self._call(
            "kms",
            "CreateAlias",
            alias,
            lambda: self._client("kms").create_alias(AliasName=alias, TargetKeyId=key_id),
        )

    def describe_key(self, key_id: str) -> dict[str, Any]:
        """KMS ``DescribeKey``: the key's metadata (``KeyId``, ``Arn``, ``KeyState``, ...)."""
        answer = self._call(
            "kms", "DescribeKey", key_id, lambda: self._client("kms").describe_key(KeyId=key_id)
        )
        return dict(answer["KeyMetadata"])

    def encrypt(self, key_id: str, data: bytes) -> bytes:
        """KMS ``Encrypt``: the ciphertext blob of ``data`` under ``key_id``."""
        answer = self._call(
            "kms",
            "Encrypt",
            key_id,
            lambda: self._client("kms").encrypt(KeyId=key_id, Plaintext=data),
            sensitive=True,
        )
        return bytes(answer["CiphertextBlob"])

    def decrypt(self, blob: bytes) -> bytes:
        """KMS ``Decrypt`` of a symmetric ciphertext blob (the blob names its key)."""
        answer = self._call(
            "kms",
            "Decrypt",
            "ciphertext",
            lambda: self._client("kms").decrypt(CiphertextBlob=blob),
            sensitive=True,
        )
        return bytes(answer["Plaintext"])

    def key_reachable(self, key_id: str) -> bool:
        """True when KMS ``DescribeKey`` on ``key_id`` succeeds for these credentials."""
        try:
            self.describe_key(key_id)
        except AwsError:
            return False
        return True
