"""``cfaccess_mw.users``: the public import path of :mod:`cfaccess_mw.core.users` (the user lookup's cache).

A package, not a ``users.py`` beside this one, only so that git sees the old ``cfaccess_mw/users.py`` as moved to its
new place (branches that edit it merge there); it may become ``cfaccess_mw/users.py`` once they are merged.
"""

from ..core.users import MISS, UserDirectory, UserLookup, cache_key, is_async_callable

__all__ = ["MISS", "UserDirectory", "UserLookup", "cache_key", "is_async_callable"]
