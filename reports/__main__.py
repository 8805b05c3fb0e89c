"""`python -m reports` is the `conformance` command."""
import sys

from reports.cli import main

sys.exit(main())
