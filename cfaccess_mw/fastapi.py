"""``cfaccess_mw.fastapi``: the public import path of :mod:`cfaccess_mw.integrations.fastapi`."""

from .integrations.fastapi import *  # noqa: F403
from .integrations.fastapi import __all__ as __all__
