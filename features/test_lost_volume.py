"""The lost volume feature."""

from pytest_bdd import scenarios

scenarios("lost_volume.feature")
