"""``python -m bcp_core``: see :mod:`bcp_core.cli`."""

import sys

from bcp_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
