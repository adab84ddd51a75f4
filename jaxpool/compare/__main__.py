"""``python -m jaxpool.compare``."""

import sys

from jaxpool.compare.cli import main

sys.exit(main())
