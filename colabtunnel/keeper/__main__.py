"""`python -m colabtunnel.keeper`: how `up` starts a keeper (keeper/launch.py)."""

import sys

from colabtunnel.keeper.process import main

sys.exit(main())
