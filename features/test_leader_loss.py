"""The leader loss feature."""

from pytest_bdd import scenarios

scenarios("leader_loss.feature")
