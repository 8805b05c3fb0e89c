"""`python -m layer_conformance` is the `conformance` command."""
import sys

from layer_conformance.cli import main

sys.exit(main())
