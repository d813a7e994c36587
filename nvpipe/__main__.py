"""`python -m nvpipe ...` is the `nvpipe` command."""

import sys

from nvpipe.app.cli import main

sys.exit(main())
