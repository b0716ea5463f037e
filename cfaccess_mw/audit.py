"""``cfaccess_mw.audit``: the public import path of :mod:`cfaccess_mw.core.audit`."""

from .core.audit import *  # noqa: F403
from .core.audit import __all__ as __all__
