"""``python -m fatvit`` runs the ``fatvit`` command."""

import sys

from .cli import main

sys.exit(main())
