"""The signing keys: the JWKS client (:mod:`.jwks`), the key source of each preset (:mod:`.sources`) and the
HTTP fetching and single-flight they share, sync and async (:mod:`.fetching`): the core's I/O drivers.

``from cfaccess_mw.keys import JWKSClient`` (and the other names of :mod:`.jwks`) work as before the
package split. They are imported on first use rather than here: :mod:`cfaccess_mw.core.jwk` imports
:mod:`.fetching`, which imports this package first, and :mod:`.jwks` imports :mod:`cfaccess_mw.core.jwk`,
so importing :mod:`.jwks` here would close that cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .jwks import *  # noqa: F403
    from .jwks import __all__ as __all__


def __getattr__(name: str) -> Any:
    """The names of :mod:`.jwks` (its ``__all__`` too), imported on first use: see the module docstring for why.

    ``__all__`` itself is :mod:`.jwks`'s, so ``from cfaccess_mw.keys import *`` offers the same names and the
    list is written once."""
    jwks = importlib.import_module(".jwks", __name__)
    if name != "__all__" and name not in jwks.__all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(jwks, name)
    globals()[name] = value
    return value
