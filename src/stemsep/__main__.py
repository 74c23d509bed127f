"""``python -m stemsep`` is the ``stemsep`` command."""

import sys

from .cli import main

sys.exit(main())
