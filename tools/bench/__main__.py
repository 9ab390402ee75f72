"""``python -m tools.bench [--quick] [--tiny] [--out DIR] [--only WORKLOAD,...] [--skip-pytcp]``."""

import sys

from tools.bench.cli import main

sys.exit(main())
