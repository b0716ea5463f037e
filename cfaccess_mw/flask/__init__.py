"""``cfaccess_mw.flask``: the public import path of :mod:`cfaccess_mw.integrations.flask`.

A package, not a ``flask.py`` beside this one, only so that git sees the old ``cfaccess_mw/flask.py`` as moved to its
new place (branches that edit it merge there); it may become ``cfaccess_mw/flask.py`` once they are merged.
"""

from ..integrations.flask import *  # noqa: F403
from ..integrations.flask import __all__ as __all__
