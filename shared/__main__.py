"""``python -m shared`` runs the ``tokensync`` command line (the stack starts processes so)."""

from __future__ import annotations

import sys

from shared.cli import main

sys.exit(main())
