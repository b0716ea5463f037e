"""``cfaccess_mw.pytest_plugin``: the public import path of :mod:`cfaccess_mw.testing.pytest_plugin`."""

from .testing.pytest_plugin import *  # noqa: F403
from .testing.pytest_plugin import __all__ as __all__
