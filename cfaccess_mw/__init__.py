"""cfaccess_mw: verify Cloudflare Access at the origin of a Starlette or FastAPI app, fail closed."""

import logging

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

# A library logs, the application decides where it goes. Without a handler of its own in the hierarchy, a
# WARNING (every refused token is one) would reach Python's last-resort handler and print on stderr of an app
# that configured no logging. The NullHandler stops that; records still propagate to whatever the app sets up.
logging.getLogger("cfaccess_mw").addHandler(logging.NullHandler())
