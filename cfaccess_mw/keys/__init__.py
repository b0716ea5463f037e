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
    from .jwks import (
        ABSENT_KIDS_REMEMBERED,
        DEFAULT_MAX_AGE_SECONDS,
        MAX_JWKS_BYTES,
        MAX_RSA_BITS,
        MIN_RSA_BITS,
        Get,
        JWKParser,
        JWKSClient,
        JWKSFetchError,
        KeySet,
        Plan,
        PublicKey,
        drive_async,
        drive_sync,
        has_roca_fingerprint,
        http_get,
        human_seconds,
        jwk_kid,
        parse_jwk,
        parse_jwks,
    )

__all__ = [
    "ABSENT_KIDS_REMEMBERED",
    "DEFAULT_MAX_AGE_SECONDS",
    "MAX_JWKS_BYTES",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "Get",
    "JWKParser",
    "JWKSClient",
    "JWKSFetchError",
    "KeySet",
    "Plan",
    "PublicKey",
    "drive_async",
    "drive_sync",
    "has_roca_fingerprint",
    "http_get",
    "human_seconds",
    "jwk_kid",
    "parse_jwk",
    "parse_jwks",
]


def __getattr__(name: str) -> Any:
    """The names of :mod:`.jwks`, imported on first use (see the module docstring for why not here)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".jwks", __name__), name)
    globals()[name] = value
    return value
