"""``python -m xmkd ...``: the same as the ``xmkd`` command."""

import sys

from xmkd.cli import console_main

sys.exit(console_main())
