"""``python -m connector`` is the same as the ``moengage-connector`` command."""

import sys

from connector.cli import main

sys.exit(main())
