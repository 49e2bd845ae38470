"""The total loss feature."""

from pytest_bdd import scenarios

scenarios("total_loss.feature")
