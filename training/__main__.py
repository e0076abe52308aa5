"""``python -m training``: the ``embedserve-train`` command line."""

import sys

from training.cli import main

sys.exit(main())
