"""``python -m vaultdr.envs.local.kubeapi``: run the stand-in's server (see :mod:`.server`)."""

import sys

from vaultdr.envs.local.kubeapi.server import main

if __name__ == "__main__":
    sys.exit(main())
