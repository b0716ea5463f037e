"""``cfaccess_mw.permissions``: the public import path of :mod:`cfaccess_mw.core.permissions`."""

from .core.permissions import *  # noqa: F403
from .core.permissions import __all__ as __all__
