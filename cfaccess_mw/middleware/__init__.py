"""``cfaccess_mw.middleware``: the public import path of :mod:`cfaccess_mw.integrations.middleware`.

A package, not a ``middleware.py`` beside this one, only so that git sees the old ``cfaccess_mw/middleware.py``
as moved to its new place (branches that edit it merge there); it may become ``cfaccess_mw/middleware.py`` once
they are merged.
"""

from ..integrations.middleware import *  # noqa: F403
from ..integrations.middleware import __all__ as __all__
