"""``python -m requests_tanium_session``: the ``tanium-session`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
