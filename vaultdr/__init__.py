"""vaultdr: DR drills and chaos testing for Vault/OpenBao on Kubernetes."""

__version__ = "0.1.0"
