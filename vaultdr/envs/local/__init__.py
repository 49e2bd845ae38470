"""The local environment: bao processes, the moto AWS emulator and a Kubernetes API stand-in on loopback."""
