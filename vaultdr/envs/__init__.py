"""Environments: where the stack under test runs (local processes, kind, EKS)."""
