"""The decision, with no I/O and no web framework: which credential a request carries, who a verified token
names, and the principal the user lookup's answer makes.

Per request, in order, and never falling from a failed method to a weaker one:

1. The proxy's token present (and token checking configured): verify it;
   an identity token's email must be an existing user of the app, a service
   token's client ID must be allowed. Any failure refuses.
2. Else ``Authorization: Bearer <key>``: must match a configured API key.
3. Else, in ``local`` mode only, a loopback socket peer that addressed the app as a
   local service (see :mod:`cfaccess_mw.core.exposure`) is the local operator.
4. Else 401.

:class:`Decision` holds the configuration these steps read; it fetches nothing and awaits nothing.
:class:`~cfaccess_mw.core.authenticator.Authenticator` adds the I/O they ask for (a key the cache lacks, the
user), once for the event loop and once for threads.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from .errors import AuthUnavailable, Forbidden, InvalidToken, Reason, Unauthorized
from .exposure import LocalAddressing
from .principals import Principal
from .providers import PRESETS, Provider, token_header
from .request import (
    MAX_API_KEY_LENGTH,
    _access_cookie,
    _bearer_id_token,
    _escaped,
    normalise_email,
    route_path,
    scope_of,
)
from .settings import ExposureMode, Settings
from .tokens import MAX_TOKEN_LENGTH, VerifiedToken, too_large
from .users import UserLookup

logger = logging.getLogger("cfaccess_mw")

ExtraScopes = Callable[[Principal], Iterable[str]]
"""``extra_scopes(principal) -> scopes``: app-defined scopes (roles, say) added to the principal's own. A plain
function returning a list, set or other iterable of names; a string, a mapping or an awaitable is a 503."""


class Identity:
    """What a verified token's claims yield, kept with the token: the email to look up (``None`` for a
    service), the claims, and the principal built last time (immutable, so requests may share it)."""

    __slots__ = ("claims", "email", "principal")

    def __init__(self, email: str | None, claims: Mapping[str, Any], principal: Principal | None = None) -> None:
        self.email = email
        self.claims = claims
        self.principal = principal


_new_object = object.__new__


def _user_principal(email: str, user: Any, claims: Mapping[str, Any]) -> Principal:
    """``Principal("user", email=email, user=user, claims=claims)``, built without the frozen dataclass's
    ``__init__``, which sets each field through ``object.__setattr__`` (0.8 µs against 0.27 µs). It runs for every
    fresh token, and for every request whose lookup returns a new object (an ORM session per request). The result
    is the same frozen object: test_authenticator compares every field with the constructor's."""
    principal: Principal = _new_object(Principal)
    fields = principal.__dict__
    fields["kind"] = "user"
    fields["email"] = email
    fields["name"] = None
    fields["user"] = user
    fields["claims"] = claims
    return principal


class Decision:
    """The I/O-free steps of one configuration's decision (see the module's rules), shared by every adapter
    through :class:`~cfaccess_mw.core.authenticator.Authenticator`, which drives them."""

    def __init__(
        self, settings: Settings, *, user_lookup: UserLookup | None = None, extra_scopes: ExtraScopes | None = None
    ) -> None:
        self.settings = settings
        self.user_lookup = user_lookup
        self.extra_scopes = extra_scopes
        self._trust_loopback = self.settings.exposure_mode is ExposureMode.LOCAL
        self._local_addressing = LocalAddressing(self.settings.local_hosts)
        if self._trust_loopback and self.settings.local_hosts:
            logger.warning(
                "cfaccess_mw: CFACCESS_LOCAL_HOSTS=%s: over plain http a browser does not say which page made a"
                " request to these names, so there only requests carrying a local Origin (POSTs, websockets, CORS"
                " fetches of the app's own page) are the local operator; a typed URL, a link, an image, a GET fetch"
                " and curl get 401. Serve the app over https under these names, or use localhost or 127.0.0.1",
                ",".join(self.settings.local_hosts),
            )
        self._allow_cookie = self.settings.allow_cookie
        #: ``CFACCESS_PUBLIC_PATHS`` (read before :meth:`is_public` is called: most apps have none).
        self.public_paths = self.settings.public_paths
        self._services = {t.client_id: t.name for t in self.settings.service_tokens}
        # The api_key and local principals never change (and are immutable): built once.
        self._api_key_principals = {k.name: Principal("api_key", name=k.name) for k in self.settings.api_keys}
        self._local = Principal("local", name="local")
        # Which proxy signs the token, and the header it arrives in (providers.py; Cloudflare's by default).
        self._cloudflare = self.settings.provider is Provider.CLOUDFLARE
        self._proxy = PRESETS[self.settings.provider].label
        self._token_header = token_header(self.settings).encode("latin-1")
        self._token_in_authorization = self._token_header == b"authorization"  # the oidc preset's default
        self._verifies_tokens = self.settings.jwt_enabled

    def is_public(self, source: Any, routed: str | None = None) -> bool:
        """Whether the request's path is one of ``CFACCESS_PUBLIC_PATHS`` (relative to ``root_path``).

        Judged on the path as requested (a mount's full path, :func:`route_path`), or on ``routed``: the
        path the framework's router matches, where an adapter can see it and the framework drew it from the
        scope its own way (Litestar splits ``root_path`` off wherever it occurs, Quart makes a path outside
        ``root_path`` a path of one space, Falcon routes the whole path, root_path included). Only where the raw
        and the decoded path agree: a raw path with a percent-escape is never public. Some routers match
        the raw path (BlackSheep), others the decoded one; ``/status%2Fx`` decodes to ``/status/x`` under
        a public ``/status`` but routes to ``/{slug}`` on the raw path, and ``/%73tatus/x`` likewise. Only
        where both read the same does "public" mean the same route to us and to the router. A public
        path is therefore requested without escapes (a health check or static file name always can be).
        """
        if not self.public_paths:
            return False
        scope = scope_of(source)
        path = route_path(scope) if routed is None else routed
        for public in self.public_paths:
            if path == public or (path.startswith(public) and path[len(public)] == "/"):
                # A dot segment could climb out of the public prefix in whatever serves the path.
                padded = path + "/"
                if "/../" in padded or "/./" in padded:
                    return False
                return not _escaped(scope.get("raw_path"))
        return False

    def credential(self, source: Any) -> Principal | str | bytes:
        """Which credential the request carries, decided from its headers and peer alone: the principal of an
        API key or of the local operator, or the token to verify (the header's bytes as received, or the
        cookie's text); or the refusal."""
        scope = source if isinstance(source, dict) else scope_of(source)  # a scope (a dict): no call per request
        jwt_value: bytes | None = None
        jwt_header: str | None = None
        authorization: str | None = None
        cookie: list[bytes] | None = None
        token_header = self._token_header  # b"cf-access-jwt-assertion" unless another proxy's preset
        for name, value in scope["headers"]:  # one pass; a credential header sent twice is ambiguous
            if name == token_header:
                if jwt_value is not None:
                    raise InvalidToken(
                        Reason.TOKEN_MALFORMED,
                        "The access token header was sent more than once.",
                        f"{self._token_header.decode()} appears more than once",
                    )
                jwt_value = value
            elif name == b"authorization":
                if authorization is not None:
                    raise Unauthorized(
                        Reason.API_KEY_INVALID,
                        "The Authorization header was sent more than once.",
                        "Authorization appears more than once",
                    )
                authorization = value.decode("latin-1")
            elif name == b"cookie" and self._allow_cookie:
                # Collected, joined once below: joining as they come costs quadratic time in the header count.
                if cookie is None:
                    cookie = [value]
                else:
                    cookie.append(value)
        # Each token's size is checked where it is read, before it is decoded or hashed (a cache lookup hashes it).
        if jwt_value is not None:
            if self._token_in_authorization:
                jwt_header, authorization = _bearer_id_token(jwt_value.decode("latin-1"))
            elif self._verifies_tokens:
                if len(jwt_value) > MAX_TOKEN_LENGTH:
                    raise too_large(len(jwt_value))
                # Decoded only if verified afresh: a repeated token is found by its bytes. Bytes, not a bytearray a
                # server may hand (unhashable, and not decoded by the verifier): the cache hashes what it is given.
                return jwt_value if type(jwt_value) is bytes else bytes(jwt_value)
        if self._verifies_tokens:
            if jwt_header is None and cookie is not None:
                jwt_header = _access_cookie(cookie)
            if jwt_header is not None:
                if len(jwt_header) > MAX_TOKEN_LENGTH:  # the cookie's, or the oidc preset's Authorization
                    raise too_large(len(jwt_header))
                return jwt_header
        if authorization is not None:
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() == "bearer":
                return self._principal_from_api_key(credential.strip())
        if self._trust_loopback:
            refused = self._local_addressing.refusal(scope)
            if refused is None:
                return self._local
            raise Unauthorized(
                Reason.NO_CREDENTIALS,
                f"Authentication required: send a {self._proxy} token or an API key.",
                f"no {self._token_header.decode()} token and no Bearer key; not the local operator: {refused}",
            )
        raise Unauthorized(
            Reason.NO_CREDENTIALS,
            f"Authentication required: send a {self._proxy} token or an API key.",
            f"no {self._token_header.decode()} token and no Bearer key (reverse-proxy mode)",
        )

    def scopes_for(self, principal: Principal) -> list[str]:
        """The principal's scopes plus ``extra_scopes``: a new list each time, since apps may add to it."""
        if self.extra_scopes is None:
            return principal.scopes
        try:
            given = self.extra_scopes(principal)
            if isinstance(given, (str, bytes, Mapping)) or hasattr(type(given), "__await__"):
                # list() would keep a mapping's keys ({"admin": False} grants admin) or a string's letters.
                self._extra_scopes_mistake(given)
            extra = list(given)
        except AuthUnavailable:
            raise
        except Exception as exc:
            logger.error("cfaccess_mw: extra_scopes raised %s", type(exc).__name__)
            raise AuthUnavailable(
                Reason.USER_LOOKUP_FAILED,
                "The user directory is unavailable; try again shortly.",
                f"extra_scopes raised {type(exc).__name__}",
            ) from None
        if any(type(scope) is not str for scope in extra):
            logger.error("cfaccess_mw: extra_scopes returned something other than strings")
            raise AuthUnavailable(
                Reason.USER_LOOKUP_FAILED,
                "The user directory is unavailable; try again shortly.",
                "extra_scopes returned something other than an iterable of strings",
            )
        return [*principal.scopes, *extra]

    @staticmethod
    def _extra_scopes_mistake(given: object) -> NoReturn:
        """503 for an ``extra_scopes`` answer that is not a collection of names; a coroutine is closed first."""
        what = "a coroutine" if inspect.iscoroutine(given) else f"a {type(given).__name__}"
        if inspect.iscoroutine(given):
            given.close()  # an ``async def`` extra_scopes: not supported, and never to be warned about later
        logger.error(
            "cfaccess_mw: extra_scopes returned %s; it must be a plain function returning a list or set of scope names",
            what,
        )
        raise AuthUnavailable(
            Reason.USER_LOOKUP_FAILED,
            "The user directory is unavailable; try again shortly.",
            f"extra_scopes returned {what}, not a collection of scope names",
        )

    def identified(self, verified: VerifiedToken) -> Principal | Identity:
        """Who a verified token names: an allowed service's principal, or the user's identity to look up.

        What the claims yield is kept with the token (``memo``), so a repeated token costs none of this.
        """
        identity: Identity | None = verified.memo
        if identity is None:
            identity = verified.memo = self._identity(verified.claims)
        if identity.email is None:  # an allowed service token: its principal does not change
            assert identity.principal is not None
            return identity.principal
        return identity

    def admit(self, identity: Identity, user: Any) -> Principal:
        """The user's principal, given what the lookup found (looked up on every request unless
        CFACCESS_USER_CACHE_SECONDS lets a found user be remembered)."""
        email = identity.email
        assert email is not None
        if user is None:  # None, and the False, 0 or "" a yes/no lookup would return
            raise Forbidden(
                Reason.UNKNOWN_USER,
                "This account is not a user of this application; ask an administrator to add it.",
                f"no user with email {email!r}"
                if self.user_lookup is not None
                else f"no user_lookup is configured, so no email is a user ({email!r})",
            )
        principal = identity.principal
        if principal is None or principal.user is not user:
            principal = identity.principal = _user_principal(email, user, identity.claims)
        return principal

    def _identity(self, claims: Mapping[str, Any]) -> Identity:
        """Who verified claims name: a normalised email, or an allowed service (refusals are not remembered)."""
        if "email" in claims:
            return Identity(normalise_email(claims["email"]), claims)
        client_id = claims.get("common_name") if self._cloudflare else None  # service tokens are Cloudflare's
        if isinstance(client_id, str) and client_id:
            name = self._services.get(client_id)
            if name is None:
                raise Forbidden(
                    Reason.SERVICE_TOKEN_NOT_ALLOWED,
                    "This service token is not allowed for this application.",
                    f"service token client ID {client_id!r} is not in CFACCESS_SERVICE_TOKENS",
                )
            return Identity(None, claims, Principal("service", name=name, claims=claims))
        if not self._cloudflare:  # service tokens are Cloudflare's: elsewhere only an email names anyone
            raise InvalidToken(
                Reason.CLAIM_INVALID,
                "The token names no user: it has no email address.",
                f"the token has no 'email' claim (the {self._proxy} preset names users by email)",
            )
        raise InvalidToken(
            Reason.CLAIM_INVALID,
            "The token names neither a user nor a service token.",
            "the token has no 'email' claim and no usable 'common_name' claim",
        )

    def _principal_from_api_key(self, key: str) -> Principal:
        if key and len(key) <= MAX_API_KEY_LENGTH:
            match = self.settings.find_api_key(hashlib.sha256(key.encode("latin-1")).digest())
            if match is not None:
                return self._api_key_principals[match.name]
        raise Unauthorized(Reason.API_KEY_INVALID, "The API key is not valid.", "no configured API key matches")
