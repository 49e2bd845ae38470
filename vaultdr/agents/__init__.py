"""The agents that keep the stack healthy: snapshot, restore, configure.

They are the ``vaultdr`` package itself, so the same code runs as processes in
the local environment and as containers in kind/EKS.
"""
