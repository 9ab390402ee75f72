"""``python -m tcpstack`` is the ``tcpstack`` command."""

import sys

from tcpstack.cli import main

sys.exit(main())
