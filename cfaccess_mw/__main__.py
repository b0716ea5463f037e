"""``python -m cfaccess_mw``: the same as the ``cfaccess-mw`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
