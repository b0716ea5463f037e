"""``cfaccess_mw.wsgi``: the public import path of :mod:`cfaccess_mw.integrations.wsgi`."""

from .integrations.wsgi import *  # noqa: F403
from .integrations.wsgi import __all__ as __all__
