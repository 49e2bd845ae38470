"""The kms revoked feature."""

from pytest_bdd import scenarios

scenarios("kms_revoked.feature")
