"""``python -m navro_adapters`` is the ``navro-adapters`` command."""

import sys

from .cli import main

sys.exit(main())
