"""`python -m segcore ...`: see segcore/cli.py."""

import sys

from segcore.cli import main

sys.exit(main())
