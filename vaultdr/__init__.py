"""vaultdr: DR drills and chaos testing for Vault/OpenBao on Kubernetes."""

__version__ = "0.1.0"


def discover(discover_system: bool = True) -> dict[str, object]:
    """Chaos Toolkit discovery (``chaos discover vaultdr``): the extension's activities."""
    # In the function: `import vaultdr` (every agent, the CLI) must not load Chaos Toolkit;
    # only `chaos discover vaultdr` calls this.
    from chaoslib.discovery import discover_actions, discover_probes, initialize_discovery_result

    discovery = initialize_discovery_result("vaultdr", __version__, "vault")
    discovery["activities"].extend(discover_actions("vaultdr.chaos.actions"))
    discovery["activities"].extend(discover_probes("vaultdr.chaos.probes"))
    return dict(discovery)
