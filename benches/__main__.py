"""`python -m benches`: the same as `python -m benches.run`."""

import sys

from benches.run import main

sys.exit(main())
