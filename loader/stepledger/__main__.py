"""Allow `python -m stepledger`."""

import sys

from stepledger.cli import main

sys.exit(main())
