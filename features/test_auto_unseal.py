"""The auto unseal feature."""

from pytest_bdd import scenarios

scenarios("auto_unseal.feature")
