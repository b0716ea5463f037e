"""``cfaccess_mw.flask``: the public import path of :mod:`cfaccess_mw.integrations.flask`."""

from .integrations.flask import *  # noqa: F403
from .integrations.flask import __all__ as __all__
