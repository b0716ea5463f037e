"""``cfaccess_mw.wsgi``: the public import path of :mod:`cfaccess_mw.integrations.wsgi`.

A package, not a ``wsgi.py`` beside this one, only so that git sees the old ``cfaccess_mw/wsgi.py`` as moved to its
new place (branches that edit it merge there); it may become ``cfaccess_mw/wsgi.py`` once they are merged.
"""

from ..integrations.wsgi import *  # noqa: F403
from ..integrations.wsgi import __all__ as __all__
