"""The snapshot integrity feature."""

from pytest_bdd import scenarios

scenarios("snapshot_integrity.feature")
