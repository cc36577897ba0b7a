"""`python -m virtwatch.cli`."""

import sys

from virtwatch.cli.main import main

sys.exit(main())
