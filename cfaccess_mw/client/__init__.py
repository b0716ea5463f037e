"""Client side: let a CLI or an agent pass the authenticating proxy, then the app.

A request to an app behind Cloudflare Access (or oauth2-proxy, Authelia, an mTLS
load balancer) meets two independent gates. The edge decides whether the request
reaches the origin at all: a browser satisfies it with an SSO login, a machine
with a service token (``CF-Access-Client-Id`` / ``CF-Access-Client-Secret``), a
person at a terminal with a ``cloudflared`` login (``cf-access-token``). Only then
does the app see its own ``Authorization: Bearer <key>``. :class:`AccessAuth` is
an ``httpx.Auth`` that sends both, and turns an edge refusal (a redirect to the
login page, or a ``Cloudflare-Access`` challenge) into an
:class:`AccessChallengeError` that says what to configure.

Header values and the key may be written as ``${VAR}`` so no secret has to sit in
a file; they are expanded once, when the auth is built, and an unset variable is
an error naming it. Values are kept in a wrapper whose ``repr`` is redacted, and
nothing in this module logs, raises or prints a value: only header names.

Configuration (see :meth:`AccessAuth.from_file` and :meth:`AccessAuth.from_env`)::

    [api]
    url = "https://app.example.com"
    key = "${APP_API_KEY}"

    [api.headers]
    CF-Access-Client-Id = "0123abcd.access"
    CF-Access-Client-Secret = "${CF_ACCESS_CLIENT_SECRET}"

The parts: :mod:`.config` (variables, the TOML table, ``${VAR}``), :mod:`.challenge` (the edge's refusal),
:mod:`.cloudflared` (a person's token) and :mod:`.auth` (:class:`AccessAuth`).
"""

from .auth import CF_ACCESS_TOKEN_HEADER, SERVICE_TOKEN_HEADERS, AccessAuth
from .challenge import AccessChallengeError, detect_challenge
from .cloudflared import CloudflaredError, CloudflaredToken, TokenProvider
from .config import (
    CLIENT_VARIABLES,
    ENV_API_KEY,
    ENV_CLOUDFLARED,
    ENV_CONFIG,
    ENV_HEADERS,
    ENV_URL,
    ClientConfigError,
    expand_env,
)

__all__ = [
    "CF_ACCESS_TOKEN_HEADER",
    "CLIENT_VARIABLES",
    "ENV_API_KEY",
    "ENV_CLOUDFLARED",
    "ENV_CONFIG",
    "ENV_HEADERS",
    "ENV_URL",
    "SERVICE_TOKEN_HEADERS",
    "AccessAuth",
    "AccessChallengeError",
    "ClientConfigError",
    "CloudflaredError",
    "CloudflaredToken",
    "TokenProvider",
    "detect_challenge",
    "expand_env",
]
