"""The decision, apart from any framework: who is the caller of this request, or why not.

:class:`Authenticator` holds everything one configuration needs (settings, the key
set, the verified-token cache, the user lookup, the audit hook) and answers one
question per request. The ASGI middleware and every framework adapter share it, so
an app has one key set and one token cache however many middleware instances its
framework builds (Litestar builds one per route handler).

Per request, in order, and never falling from a failed method to a weaker one:

1. ``Cf-Access-Jwt-Assertion`` present (and JWT checking configured): verify it;
   an identity token's email must be an existing user of the app, a service
   token's client ID must be allowed. Any failure refuses.
2. Else ``Authorization: Bearer <key>``: must match a configured API key.
3. Else, in ``local`` mode only, a loopback socket peer that addressed the app as a
   local service (see :mod:`cfaccess_mw.exposure`) is the local operator.
4. Else 401.

What a request is made of here is the ASGI scope, or anything with a ``scope``
attribute (Starlette's, Litestar's, Django's and Falcon's request objects): only
``type``, ``headers``, ``client``, ``path``, ``root_path``, ``method`` and (local mode) ``scheme`` are read.
"""

from __future__ import annotations

import hashlib
import http.cookies
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, NoReturn

import anyio
import httpx

from ..keys.sources import KeyStore, build_key_source
from .audit import (
    AuditEvent,
    AuditHook,
    Outcome,
    close_unawaited,
    emit,
    emit_sync,
    logs_acceptances,
    request_facts,
    requested_path,
)
from .errors import AuthError, AuthUnavailable, Forbidden, InvalidToken, Reason, Unauthorized
from .exposure import LocalAddressing
from .principals import Principal
from .profiles import build_profile
from .providers import PRESETS, Provider, token_header
from .settings import ExposureMode, Settings
from .tokens import MAX_TOKEN_LENGTH, VerifiedToken, too_large
from .users import UserDirectory, UserLookup
from .verifier import TokenVerifier

logger = logging.getLogger("cfaccess_mw")

__all__ = ["Authenticated", "Authenticator", "ExtraScopes", "UserLookup", "normalise_email", "route_path", "scope_of"]

ExtraScopes = Callable[[Principal], Iterable[str]]
"""``extra_scopes(principal) -> scopes``: app-defined scopes (roles, say) added to the principal's own. A plain
function returning a list, set or other iterable of names; a string, a mapping or an awaitable is a 503."""

#: Longest Bearer key considered; longer ones are refused without hashing.
MAX_API_KEY_LENGTH = 512
COOKIE_NAME = "CF_Authorization"
#: Most bytes of Cookie headers read for CF_Authorization. Browsers send a few KB; Cloudflare's edge allows 32 KB of
#: request headers in all. More is refused before any parsing, so the work one request can cause stays bounded.
MAX_COOKIE_BYTES = 64 * 1024
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Authenticated(NamedTuple):
    """A caller that proved who it is: the principal, and every scope it holds (``extra_scopes`` applied)."""

    principal: Principal
    scopes: list[str]


def scope_of(source: Any) -> Mapping[str, Any]:
    """The ASGI scope of ``source``: a scope itself, or a request object carrying one in ``.scope``."""
    if type(source) is dict:  # what servers pass: no ABC check on every request
        return source
    if isinstance(source, Mapping):
        return source
    scope = getattr(source, "scope", None)
    if isinstance(scope, Mapping):
        return scope
    raise TypeError(f"expected an ASGI scope or a request with a .scope, got {type(source).__name__}")


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


def _access_cookie(values: list[bytes]) -> str | None:
    """The ``CF_Authorization`` cookie's value from the request's ``Cookie`` headers.

    Bounded before any parsing: more than :data:`MAX_COOKIE_BYTES` in all is refused
    (no browser sends that much, and every cookie would have to be read to find ours).
    Refused when the cookie is sent twice (cookie tossing from a sibling domain).
    """
    size = sum(map(len, values)) + 2 * (len(values) - 1)
    if size > MAX_COOKIE_BYTES:
        raise InvalidToken(
            Reason.TOKEN_TOO_LARGE,
            "The request's cookies are too large.",
            f"{len(values)} Cookie headers of {size} bytes in all exceed the {MAX_COOKIE_BYTES} limit",
        )
    cookie = b"; ".join(values).decode("latin-1")
    # Read as browsers and Starlette's cookie_parser read it (RFC 6265 in practice): chunks split at ";", the
    # name before the first "=" (a chunk without one is a value with no name), both stripped, a quoted value
    # unquoted by Python's own rules. A chunk naming our cookie without a value still counts as a second one.
    ours = [
        (sep, value)
        for name, sep, value in (c.partition("=") for c in cookie.split(";"))
        if name.strip() == COOKIE_NAME
    ]
    if len(ours) > 1:
        raise InvalidToken(
            Reason.TOKEN_MALFORMED,
            "The access cookie was sent more than once.",
            f"{COOKIE_NAME} cookie appears {len(ours)} times",
        )
    if not ours or not ours[0][0]:
        return None
    return http.cookies._unquote(ours[0][1].strip())


def _bearer_id_token(value: str) -> tuple[str | None, str | None]:
    """The oidc preset reading ``Authorization``: ``(ID token, None)`` or ``(None, header)`` for the API-key path.

    Decided by shape alone, before anything is verified, so a credential takes exactly
    one path and a failure on it never falls through to the other: a Bearer credential
    with a ``.`` is a JWT (an ID token), anything else an API key (``new-api-key``
    makes keys without dots).
    """
    scheme, _, credential = value.partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer" and "." in credential:
        return credential, None
    return None, value


def route_path(scope: Mapping[str, Any]) -> str:
    """The path as requested, without the server's ``root_path`` prefix (:func:`~cfaccess_mw.audit.requested_path`:
    a mount's full path where the framework gave the adapter only the part below it)."""
    path = requested_path(scope)
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] in ("/", ""):
        return path[len(root_path) :] or "/"
    return path


def _escaped(raw_path: object) -> bool:
    """Whether a raw path (ASGI's ``raw_path``; some test clients leave the query on it) holds a percent-escape."""
    if raw_path is None:
        return False
    raw = raw_path.encode("latin-1") if isinstance(raw_path, str) else bytes(raw_path)  # type: ignore[call-overload]
    return b"%" in raw.split(b"?", 1)[0]


#: Characters an email claim may be padded with by a sloppy IdP; anything else around it is refused.
_EMAIL_PADDING = " \t"


def normalise_email(email: object) -> str:
    """The email a token names, as it is looked up: trimmed of ASCII space and tab, ASCII letters lower-cased.

    Only ASCII is trimmed and folded. ``str.strip()`` would remove Unicode spaces
    (``alice@example.com\\u3000`` would become alice), and ``str.lower()`` folds the
    Kelvin sign into ``k``: either would let one address pose as another. An email
    that still holds whitespace or a control character is refused.
    """
    if not isinstance(email, str):
        raise InvalidToken(
            Reason.CLAIM_INVALID, "The token's email claim is invalid.", f"claim 'email' is a {type(email).__name__}"
        )
    email = email.strip(_EMAIL_PADDING)
    if not email:
        raise InvalidToken(Reason.CLAIM_INVALID, "The token's email claim is invalid.", "claim 'email' is empty")
    # The ASCII space is the only character both printable and whitespace (test_authenticator checks every code
    # point), so this is "no control character and no whitespace" without a Python-level loop over the email.
    if not email.isprintable() or " " in email:
        raise InvalidToken(
            Reason.CLAIM_INVALID,
            "The token's email claim is invalid.",
            "claim 'email' contains whitespace or control characters",
        )
    # For an ASCII address (nearly all) lower() is exactly the ASCII fold, and much faster than translate.
    return email.lower() if email.isascii() else email.translate(_ASCII_LOWER)


class Authenticator:
    """Decides who the caller of a request is, for one configuration; shared by every adapter.

    ``user_lookup(email)`` (sync or async) returns the app's user or ``None``; it
    must never create one. ``audit_hook(event)`` (sync or async) sees every
    decision. ``extra_scopes(principal)`` adds app-defined scopes. ``jwks`` shares one
    key cache between configurations (it must fetch the settings' certs URL).
    ``transport`` and ``clock`` are for tests: an httpx transport for the certs
    fetch and a wall clock for token times; ``user_cache_clock`` (monotonic) is the
    user cache's (:mod:`cfaccess_mw.users`). :meth:`forget_user` drops a user the
    cache remembers.

    Call :meth:`startup` when the app starts (the ASGI middleware does it at
    ``lifespan.startup``) so the first request does not wait for the keys, and
    :meth:`aclose` when it stops.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        user_lookup: UserLookup | None = None,
        audit_hook: AuditHook | None = None,
        extra_scopes: ExtraScopes | None = None,
        jwks: KeyStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        user_cache_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.user_lookup = user_lookup
        self.audit_hook = audit_hook
        self.extra_scopes = extra_scopes
        self.users = UserDirectory(
            user_lookup,
            cache_seconds=self.settings.user_cache_seconds,
            cache_size=self.settings.user_cache_size,
            timer=user_cache_clock,
        )
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
        self.jwks: KeyStore | None = None
        self.verifier: TokenVerifier | None = None
        # Which proxy signs the token, and the header it arrives in (providers.py; Cloudflare's by default).
        self._cloudflare = self.settings.provider is Provider.CLOUDFLARE
        self._proxy = PRESETS[self.settings.provider].label
        self._token_header = token_header(self.settings).encode("latin-1")
        self._token_in_authorization = self._token_header == b"authorization"  # the oidc preset's default
        if self.settings.jwt_enabled:
            if jwks is not None and self._cloudflare and jwks.url != self.settings.certs_url:
                raise ValueError(f"jwks fetches {jwks.url}, but the settings name {self.settings.certs_url}")
            self.jwks = jwks or build_key_source(self.settings, transport)
            self.verifier = TokenVerifier(
                issuer=str(self.settings.issuer),
                audiences=self.settings.audiences,
                keys=self.jwks,
                leeway=self.settings.leeway_seconds,
                cache_size=self.settings.token_cache_size,
                clock=clock,
                profile=None if self._cloudflare else build_profile(self.settings),
            )
            if user_lookup is None:
                logger.warning("cfaccess_mw: no user_lookup given, so every %s user gets 403", self._proxy)

    def __repr__(self) -> str:
        return f"Authenticator(mode={self.settings.exposure_mode.value!r}, jwt={self.settings.jwt_enabled})"

    # --- life cycle ----------------------------------------------------------------------------

    async def startup(self) -> None:
        """Fetch the signing keys now, once, so the first request does not wait (failures are logged, and
        requests then get 503 until keys arrive). Safe to call from every middleware instance."""
        if self.jwks is not None and not self.jwks.kids:
            await self.jwks.refresh()

    def startup_sync(self) -> None:
        """:meth:`startup` for a sync app (WSGI): fetch the signing keys now, once, in this thread."""
        if self.jwks is not None and not self.jwks.kids:
            self.jwks.refresh_sync()

    def close_sync(self) -> None:
        """:meth:`aclose` for a sync app: let a background key refresh finish (bounded by the fetch timeout)."""
        if self.jwks is not None:
            self.jwks.settle_sync()

    async def aclose(self) -> None:
        """Let a background key refresh finish (bounded by the fetch timeout), so shutdown is quiet."""
        if self.jwks is not None:
            with anyio.move_on_after(self.settings.jwks_timeout_seconds + 1):
                await self.jwks.settle()

    # --- the decision --------------------------------------------------------------------------

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

    async def authenticate(self, source: Any) -> Authenticated:
        """The caller and its scopes, or an :class:`AuthError` saying why not (public paths are not exempt here)."""
        principal = await self.identify(source)
        return Authenticated(principal, self.scopes_for(principal))

    async def identify(self, source: Any) -> Principal:
        """The principal for this request, or an :class:`AuthError` saying why not.

        The decision is :meth:`credential`, :meth:`identified` and :meth:`admit`, which do
        no I/O (:meth:`known` runs the first two on a repeated token); this and
        :meth:`identify_sync` only fetch what they ask for (a key the cache lacks, the
        user), each in its own way. The ASGI middleware takes the same steps inline.
        """
        found = self.known(source)
        if type(found) is Principal:
            return found
        if type(found) is not Identity:  # a token to verify afresh
            found = self.identified(await self.verifier.verify_fresh(found))  # type: ignore[union-attr,arg-type]
            if type(found) is Principal:
                return found
        return self.admit(found, await self.users.find(found.email))  # type: ignore[arg-type]

    def identify_sync(self, source: Any) -> Principal:
        """:meth:`identify` from a thread with no event loop (WSGI): the same decision, sync I/O."""
        found = self.known(source)
        if type(found) is Principal:
            return found
        if type(found) is not Identity:
            found = self.identified(self.verifier.verify_fresh_sync(found))  # type: ignore[union-attr,arg-type]
            if type(found) is Principal:
                return found
        return self.admit(found, self.users.find_sync(found.email))  # type: ignore[arg-type]

    def known(self, source: Any) -> Principal | Identity | str | bytes:
        """What the request's credential proves with no I/O: a principal (an API key's, the local operator's,
        an allowed service's), the identity of a repeated token's user (still to be looked up), or the token
        to verify afresh (its key may need fetching); or the refusal."""
        found = self.credential(source)
        if type(found) is Principal:
            return found
        verified = self.verifier.cached(found)  # type: ignore[union-attr,arg-type]  # tokens imply a verifier
        if verified is None:
            return found
        identity = verified.memo  # a user's identity, kept with the token: read here, without a call
        if type(identity) is Identity and identity.email is not None:
            return identity
        return self.identified(verified)

    def authenticate_sync(self, source: Any) -> Authenticated:
        """:meth:`authenticate` from a thread with no event loop (WSGI)."""
        principal = self.identify_sync(source)
        return Authenticated(principal, self.scopes_for(principal))

    def credential(self, source: Any) -> Principal | str | bytes:
        """Which credential the request carries, decided from its headers and peer alone: the principal of an
        API key or of the local operator, or the token to verify (the header's bytes as received, or the
        cookie's text); or the refusal."""
        scope = source if type(source) is dict else scope_of(source)  # a server's scope: no call per request
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
            elif self.verifier is not None:
                if len(jwt_value) > MAX_TOKEN_LENGTH:
                    raise too_large(len(jwt_value))
                return jwt_value  # decoded only if verified afresh: a repeated token is found by its bytes
        if self.verifier is not None:
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

    def forget_user(self, email: str) -> None:
        """Drop ``email``'s user from the user cache (call it when the app deletes or disables the user)."""
        self.users.forget(email)

    def forget_all_users(self) -> None:
        """Drop every user from the user cache."""
        self.users.forget_all()

    # --- audit ---------------------------------------------------------------------------------

    @property
    def audits_acceptances(self) -> bool:
        """Whether an acceptance would be recorded anywhere (a hook, or the audit logger at INFO)."""
        return self.audit_hook is not None or logs_acceptances()

    async def audit(
        self,
        source: Any,
        status: int | None,
        *,
        principal: Principal | None = None,
        err: AuthError | None = None,
    ) -> None:
        """Record one decision: an acceptance of ``principal`` (with the app's status) or the refusal ``err``."""
        await emit(self._event(source, status, principal, err), self.audit_hook)

    def audit_sync(
        self,
        source: Any,
        status: int | None,
        *,
        principal: Principal | None = None,
        err: AuthError | None = None,
    ) -> None:
        """:meth:`audit` from a thread with no event loop; an ``async def`` audit hook is refused, logged."""
        pending = emit_sync(self._event(source, status, principal, err), self.audit_hook)
        if pending is not None:
            close_unawaited(pending)

    @staticmethod
    def _event(source: Any, status: int | None, principal: Principal | None, err: AuthError | None) -> AuditEvent:
        scope = scope_of(source)
        method, path, client = request_facts(scope)
        outcome: Outcome = "accepted"
        if err is not None:
            outcome = "unavailable" if isinstance(err, AuthUnavailable) else "refused"
        event = AuditEvent(
            outcome=outcome,
            status=status,
            method=method,
            path=path,
            client=client,
            kind=principal.kind if principal else None,
            principal=principal.display_name if principal else None,
            reason=err.reason.value if err else None,
            detail=err.detail if err else None,
        )
        return event
