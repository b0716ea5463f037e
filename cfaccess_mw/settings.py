"""``cfaccess_mw.settings``: the public import path of :mod:`cfaccess_mw.core.settings`."""

from .core.settings import *  # noqa: F403
from .core.settings import __all__ as __all__
