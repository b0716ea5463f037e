"""``cfaccess_mw.django``: the public import path of :mod:`cfaccess_mw.integrations.django`."""

from .integrations.django import *  # noqa: F403
from .integrations.django import __all__ as __all__
