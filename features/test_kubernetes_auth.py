"""The kubernetes auth feature."""

from pytest_bdd import scenarios

scenarios("kubernetes_auth.feature")
