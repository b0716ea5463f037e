"""``cfaccess_mw.errors``: the public import path of :mod:`cfaccess_mw.core.errors`."""

from .core.errors import *  # noqa: F403
from .core.errors import __all__ as __all__
