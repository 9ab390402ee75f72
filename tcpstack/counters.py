"""The counters every drop, refusal and event is counted in.

:class:`Counters` is a :class:`collections.Counter` whose item assignment is the
dict's own. ``Counter`` defines ``__delitem__`` in Python, so CPython routes every
item assignment of it -- ``counters[reason] += 1``, done several times per packet --
through a Python-level slot that looks the method up again each time: about 2.5 times
the cost of a dict's. Here assignment and deletion are ``dict``'s C functions again
(deleting a key that is not there raises ``KeyError``, as for a dict; nothing deletes
counters); a missing key still reads as 0, and the rest of the ``Counter`` API
(``most_common``, ``update`` adding counts, ``+``) is unchanged.

This module stays Python in the compiled build: mypyc does not compile subclasses of
``Counter``.
"""

from __future__ import annotations

from collections import Counter


class Counters(Counter[str]):
    """Event counts by name; see the module docstring."""

    __slots__ = ()
    __setitem__ = dict.__setitem__
    __delitem__ = dict.__delitem__  # type: ignore[assignment]


__all__ = ["Counters"]
