"""`python -m sync.central`: run the reference central (see `sync.central.cli`)."""

import sys

from sync.central.cli import main

sys.exit(main())
