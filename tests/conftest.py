"""Settings shared by the whole test suite: the Hypothesis profiles.

* ``ci`` (the default): derandomized (the same examples on every run, so a CI
  failure reproduces locally), no example database written to disk, no deadline
  (a loaded shared machine must not turn slowness into failures), quiet output.
  Each property test sets its own ``max_examples`` through
  ``examples()`` in ``tests/fuzz/fuzz_settings.py``, sized so that the fuzz tests
  together stay under about a minute.
* ``long``: ``HYPOTHESIS_PROFILE=long pytest tests/fuzz`` -- randomized, 25x the
  examples of ``ci``; for hunting, not for CI.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: ``max_examples`` of the ``ci`` profile; a test's budget is scaled by the active
#: profile's ``max_examples`` over this (1 under ``ci``, 25 under ``long``).
CI_MAX_EXAMPLES = 100

_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

settings.register_profile("ci", max_examples=CI_MAX_EXAMPLES, derandomize=True,
                          **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=25 * CI_MAX_EXAMPLES, derandomize=False,
                          **_COMMON)  # type: ignore[arg-type]
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
