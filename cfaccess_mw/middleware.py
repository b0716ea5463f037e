"""``cfaccess_mw.middleware``: the public import path of :mod:`cfaccess_mw.integrations.middleware`."""

from .integrations.middleware import *  # noqa: F403
from .integrations.middleware import __all__ as __all__
