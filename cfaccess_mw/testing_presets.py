"""``cfaccess_mw.testing_presets``: the public import path of :mod:`cfaccess_mw.testing.presets`."""

from .testing.presets import *  # noqa: F403
from .testing.presets import __all__ as __all__
