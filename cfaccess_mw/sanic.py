"""``cfaccess_mw.sanic``: the public import path of :mod:`cfaccess_mw.integrations.sanic`."""

from .integrations.sanic import *  # noqa: F403
from .integrations.sanic import __all__ as __all__
