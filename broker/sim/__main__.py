"""``python -m broker.sim``: the simulated broker (same as the ``broker-sim`` command)."""

from __future__ import annotations

import sys

from broker.sim._cli import main

if __name__ == "__main__":
    sys.exit(main())
