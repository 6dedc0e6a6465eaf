"""``python -m orchestrator.cli``: the ``sisa`` command without its console script."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main())
