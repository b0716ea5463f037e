"""``cfaccess_mw.falcon``: the public import path of :mod:`cfaccess_mw.integrations.falcon`."""

from .integrations.falcon import *  # noqa: F403
from .integrations.falcon import __all__ as __all__
