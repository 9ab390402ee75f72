"""Per-test example budgets for the property tests, scaled by the active profile.

The profiles themselves are registered in ``tests/conftest.py``: ``ci`` by
default, ``long`` with ``HYPOTHESIS_PROFILE=long``. A test asks for
``@examples(n)``: ``n`` examples under ``ci``, proportionally more under ``long``.
Everything else (deadline, database, derandomization) comes from the profile.
"""

from __future__ import annotations

from hypothesis import settings

CI_MAX_EXAMPLES = 100  # the ci profile's max_examples (tests/conftest.py)


def examples(n: int) -> settings:
    """Settings with ``n`` examples under the ``ci`` profile, scaled for the others."""
    scale = settings.default.max_examples / CI_MAX_EXAMPLES
    return settings(max_examples=max(1, int(n * scale)))
