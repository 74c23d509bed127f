"""``python -m stemsep`` is the ``stemsep`` command."""

import sys

from stemsep.cli import main

sys.exit(main())
