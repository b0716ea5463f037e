"""cfaccess_mw: verify Cloudflare Access at the origin of a Starlette or FastAPI app, fail closed.

The package's layers: :mod:`.core` (the decision, no I/O and no web framework), :mod:`.keys` (the
signing keys and their fetching, sync and async), :mod:`.integrations` (the ASGI middleware and one
module per framework, importable as ``cfaccess_mw.<framework>``), :mod:`.testing` (the stand-in
issuers and the pytest plugin), :mod:`.client` and :mod:`.cli`.

The names that need Starlette (the middleware, the config endpoint) and the authenticator are imported
on first use, so ``import cfaccess_mw.core.tokens`` (or a Flask app) does not import Starlette.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core import logs
from .core.audit import AuditEvent
from .core.errors import AuthError, AuthUnavailable, ConfigError, Forbidden, InvalidToken, Reason, Unauthorized
from .core.principals import Principal
from .core.settings import ApiKey, ExposureMode, ServiceToken, Settings

if TYPE_CHECKING:
    from .core.authenticator import Authenticated, Authenticator
    from .integrations.endpoints import AuthConfigEndpoint
    from .integrations.middleware import CloudflareAccessMiddleware

__all__ = [
    "ApiKey",
    "AuditEvent",
    "AuthConfigEndpoint",
    "AuthError",
    "AuthUnavailable",
    "Authenticated",
    "Authenticator",
    "CloudflareAccessMiddleware",
    "ConfigError",
    "ExposureMode",
    "Forbidden",
    "InvalidToken",
    "Principal",
    "Reason",
    "ServiceToken",
    "Settings",
    "Unauthorized",
]
__version__ = "0.1.0"

#: The public names imported on first use, and the module each comes from.
_LAZY = {
    "Authenticated": ".core.authenticator",
    "Authenticator": ".core.authenticator",
    "AuthConfigEndpoint": ".integrations.endpoints",
    "CloudflareAccessMiddleware": ".integrations.middleware",
}


def __getattr__(name: str) -> Any:
    """``cfaccess_mw.CloudflareAccessMiddleware`` and the other names of ``_LAZY``, imported on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


# A library logs, the application decides where it goes; but what an operator must act on (a misspelt variable,
# keys failing at start-up, a lookup that raises) must not vanish in an app that configured no logging. The
# fallback handler prints those on stderr only while no other handler would receive them (see core/logs.py).
logs.install()
