"""cfaccess_mw: verify Cloudflare Access at the origin of a Starlette or FastAPI app, fail closed."""

from . import logs
from .audit import AuditEvent
from .authenticator import Authenticated, Authenticator
from .endpoints import AuthConfigEndpoint
from .errors import AuthError, AuthUnavailable, ConfigError, Forbidden, InvalidToken, Reason, Unauthorized
from .middleware import CloudflareAccessMiddleware
from .principals import Principal
from .settings import ApiKey, ExposureMode, ServiceToken, Settings

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

# A library logs, the application decides where it goes; but what an operator must act on (a misspelt variable,
# keys failing at start-up, a lookup that raises) must not vanish in an app that configured no logging. The
# fallback handler prints those on stderr only while no other handler would receive them (see logs.py).
logs.install()
