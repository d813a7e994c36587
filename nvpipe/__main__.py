"""`python -m nvpipe ...` is the `nvpipe` command."""

import sys

from nvpipe.app.cli import program

sys.exit(program())
