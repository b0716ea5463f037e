"""``cfaccess_mw.users``: the public import path of :mod:`cfaccess_mw.core.users` (the user lookup's cache)."""

from .core.users import MISS, UserDirectory, UserLookup, cache_key, is_async_callable

__all__ = ["MISS", "UserDirectory", "UserLookup", "cache_key", "is_async_callable"]
