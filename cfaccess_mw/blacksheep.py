"""``cfaccess_mw.blacksheep``: the public import path of :mod:`cfaccess_mw.integrations.blacksheep`."""

from .integrations.blacksheep import *  # noqa: F403
from .integrations.blacksheep import __all__ as __all__
