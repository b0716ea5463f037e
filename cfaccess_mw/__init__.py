"""cfaccess_mw: verify Cloudflare Access at the origin of a Starlette or FastAPI app, fail closed."""

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
