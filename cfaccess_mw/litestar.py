"""``cfaccess_mw.litestar``: the public import path of :mod:`cfaccess_mw.integrations.litestar`."""

from .integrations.litestar import *  # noqa: F403
from .integrations.litestar import __all__ as __all__
