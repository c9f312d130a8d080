"""``python -m clbench.protocols.cli``: the ``clbench`` command."""

import sys

from . import main

sys.exit(main())
