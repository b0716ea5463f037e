"""``cfaccess_mw.permissions``: the public import path of :mod:`cfaccess_mw.core.permissions` (the checks every
framework's ``require`` shares) and of Starlette's ``@requires`` (:mod:`cfaccess_mw.integrations.starlette`)."""

from .core.permissions import *  # noqa: F403
from .core.permissions import __all__ as _core
from .integrations.starlette import *  # noqa: F403
from .integrations.starlette import __all__ as _starlette

__all__ = [*_core, *_starlette]
