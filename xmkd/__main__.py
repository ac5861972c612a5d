"""``python -m xmkd ...``: the same as the ``xmkd`` command."""

import sys

from xmkd.cli import main

sys.exit(main())
