"""Pre-upgrade validation: `vaultdr upgrade-check --to VERSION`."""
