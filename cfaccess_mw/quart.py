"""``cfaccess_mw.quart``: the public import path of :mod:`cfaccess_mw.integrations.quart`."""

from .integrations.quart import *  # noqa: F403
from .integrations.quart import __all__ as __all__
