"""``python -m blooio_operator`` is the ``blooio-operator`` command."""

import sys

from blooio_operator.cli import main

sys.exit(main())
