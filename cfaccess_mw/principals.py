"""``cfaccess_mw.principals``: the public import path of :mod:`cfaccess_mw.core.principals`."""

from .core.principals import *  # noqa: F403
from .core.principals import __all__ as __all__
