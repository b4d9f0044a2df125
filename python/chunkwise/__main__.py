"""``python -m chunkwise``: the same command line as the ``chunkwise`` console script."""

from chunkwise.cli import main

raise SystemExit(main())
