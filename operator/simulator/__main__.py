"""``python -m blooio_operator.simulator``: run the simulator as its own process."""

from .cli import main

raise SystemExit(main())
