"""The ASGI middleware: decide who the caller is, or refuse.

Per request, in order, and never falling from a failed method to a weaker one:

1. ``lifespan`` and public paths pass straight through (the keys are fetched at
   ``lifespan.startup`` on the way).
2. ``Cf-Access-Jwt-Assertion`` present (and JWT checking configured): verify it;
   an identity token's email must be an existing user of the app, a service
   token's client ID must be allowed. Any failure refuses.
3. Else ``Authorization: Bearer <key>``: must match a configured API key.
4. Else, in ``local`` mode only, a loopback socket peer is the local operator.
5. Else 401.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.concurrency import run_in_threadpool
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .audit import AuditEvent, AuditHook, audit_logger, emit, request_facts
from .errors import AuthError, AuthUnavailable, Forbidden, InvalidToken, Reason, Unauthorized, send_error
from .exposure import peer_is_loopback
from .keys import JWKSClient
from .keysources import KeyStore, build_key_source
from .principals import Principal
from .providers import PRESETS, Provider, build_profile, token_header
from .settings import ExposureMode, Settings
from .tokens import TokenVerifier

logger = logging.getLogger("cfaccess_mw")

UserLookup = Callable[[str], Any]
"""``lookup(email) -> user or None``, sync or async. Must only find existing users, never create one."""

#: Longest Bearer key considered; longer ones are refused without hashing.
MAX_API_KEY_LENGTH = 512
COOKIE_NAME = "CF_Authorization"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _is_async_callable(fn: object) -> bool:
    call = type(fn).__call__ if not inspect.isroutine(fn) and callable(fn) else None
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


class _Identity:
    """What a verified token's claims yield, kept with the token: the email to look up (``None`` for a
    service) and the principal built last time (immutable, so requests may share it)."""

    __slots__ = ("email", "principal")

    def __init__(self, email: str | None, principal: Principal | None = None) -> None:
        self.email = email
        self.principal = principal


def _access_cookie(cookie: str) -> str | None:
    """The ``CF_Authorization`` cookie's value; refused when sent twice (cookie tossing from a sibling domain)."""
    names = [chunk.split("=", 1)[0].strip() for chunk in cookie.split(";")]
    if names.count(COOKIE_NAME) > 1:
        raise InvalidToken(
            Reason.TOKEN_MALFORMED,
            "The access cookie was sent more than once.",
            f"{COOKIE_NAME} cookie appears {names.count(COOKIE_NAME)} times",
        )
    return cookie_parser(cookie).get(COOKIE_NAME)


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


def _route_path(scope: Scope) -> str:
    """The path as Starlette's router sees it: without the server's ``root_path`` prefix."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path) and path[len(root_path) : len(root_path) + 1] in ("/", ""):
        return path[len(root_path) :] or "/"
    return path


class CloudflareAccessMiddleware:
    """Authenticate every HTTP and websocket request behind Cloudflare Access.

    ``app.add_middleware(CloudflareAccessMiddleware, user_lookup=find_user)`` reads
    ``CFACCESS_*`` from the environment; pass ``settings=Settings(...)`` to be
    explicit. ``audit_hook(event)`` (sync or async) sees every decision.
    ``extra_scopes(principal)`` adds app-defined scopes (roles, say) to
    ``request.auth.scopes`` for ``@requires`` and :func:`cfaccess_mw.fastapi.require`.
    ``jwks`` shares one key cache between several apps (it must fetch the
    settings' certs URL). ``transport`` and ``clock`` are for tests: an httpx
    transport for the certs fetch and a wall clock for token times.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings | None = None,
        user_lookup: UserLookup | None = None,
        audit_hook: AuditHook | None = None,
        extra_scopes: Callable[[Principal], Iterable[str]] | None = None,
        jwks: KeyStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.settings = settings if settings is not None else Settings.from_env()
        self.user_lookup = user_lookup
        self.audit_hook = audit_hook
        self.extra_scopes = extra_scopes
        self._lookup_is_async = _is_async_callable(user_lookup)
        self._trust_loopback = self.settings.exposure_mode is ExposureMode.LOCAL
        self._allow_cookie = self.settings.allow_cookie
        self._public_paths = self.settings.public_paths
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
        if self.settings.jwt_enabled and not self._cloudflare:
            self.jwks = jwks or build_key_source(self.settings, transport)
            self.verifier = TokenVerifier(
                issuer=str(self.settings.issuer),
                audiences=self.settings.audiences,
                keys=self.jwks,
                leeway=self.settings.leeway_seconds,
                cache_size=self.settings.token_cache_size,
                clock=clock,
                profile=build_profile(self.settings),
            )
            if user_lookup is None:
                logger.warning("cfaccess_mw: no user_lookup given, so every %s user gets 403", self._proxy)
        elif self.settings.jwt_enabled:
            assert self.settings.certs_url is not None
            assert self.settings.issuer is not None
            if jwks is not None and jwks.url != self.settings.certs_url:
                raise ValueError(f"jwks fetches {jwks.url}, but the settings name {self.settings.certs_url}")
            self.jwks = jwks or JWKSClient(
                self.settings.certs_url,
                cache_seconds=self.settings.jwks_cache_seconds,
                cooldown_seconds=self.settings.jwks_refresh_cooldown_seconds,
                timeout=self.settings.jwks_timeout_seconds,
                transport=transport,
            )
            self.verifier = TokenVerifier(
                issuer=self.settings.issuer,
                audiences=self.settings.audiences,
                keys=self.jwks,
                leeway=self.settings.leeway_seconds,
                cache_size=self.settings.token_cache_size,
                clock=clock,
            )
            if user_lookup is None:
                logger.warning("cfaccess_mw: no user_lookup given, so every Cloudflare Access user gets 403")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan":
                receive = self._receive_with_startup(receive)
            await self.app(scope, receive, send)
            return
        if self._public_paths and self._is_public(_route_path(scope)):
            scope["user"] = UnauthenticatedUser()
            scope["auth"] = AuthCredentials()
            await self._call_app(scope, receive, send, None)
            return
        try:
            principal = await self.authenticate(scope)
            credentials = self._credentials(principal)
        except AuthError as err:
            await self._refuse(scope, send, err)
            return
        scope["user"] = principal
        scope["auth"] = credentials
        await self._call_app(scope, receive, send, principal)

    # --- the decision ------------------------------------------------------------------------

    async def authenticate(self, scope: Scope) -> Principal:
        """The principal for this request, or an :class:`AuthError` saying why not."""
        jwt_header = authorization = cookie = None
        for name, value in scope["headers"]:  # one pass; a credential header sent twice is ambiguous
            if name == self._token_header:  # b"cf-access-jwt-assertion" unless another proxy's preset
                if jwt_header is not None:
                    raise InvalidToken(
                        Reason.TOKEN_MALFORMED,
                        "The access token header was sent more than once.",
                        f"{self._token_header.decode()} appears more than once",
                    )
                jwt_header = value.decode("latin-1")
            elif name == b"authorization":
                if authorization is not None:
                    raise Unauthorized(
                        Reason.API_KEY_INVALID,
                        "The Authorization header was sent more than once.",
                        "Authorization appears more than once",
                    )
                authorization = value.decode("latin-1")
            elif name == b"cookie" and self._allow_cookie:
                cookie = value.decode("latin-1") if cookie is None else f"{cookie}; {value.decode('latin-1')}"
        if self._token_in_authorization and jwt_header is not None:
            jwt_header, authorization = _bearer_id_token(jwt_header)
        if self.verifier is not None:
            if jwt_header is None and cookie is not None:
                jwt_header = _access_cookie(cookie)
            if jwt_header is not None:
                return await self._from_token(jwt_header)
        if authorization is not None:
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() == "bearer":
                return self._principal_from_api_key(credential.strip())
        if self._trust_loopback and peer_is_loopback(scope):
            return self._local
        raise Unauthorized(
            Reason.NO_CREDENTIALS,
            f"Authentication required: send a {self._proxy} token or an API key.",
            f"no {self._token_header.decode()} token and no Bearer key"
            + ("" if self._trust_loopback else " (reverse-proxy mode)"),
        )

    def _credentials(self, principal: Principal) -> AuthCredentials:
        """``request.auth`` for this request: a new object each time, since apps may add to its scopes."""
        if self.extra_scopes is None:
            return AuthCredentials(principal.scopes)
        try:
            extra = list(self.extra_scopes(principal))
        except Exception as exc:
            logger.error("cfaccess_mw: extra_scopes raised %s", type(exc).__name__)
            raise AuthUnavailable(
                Reason.USER_LOOKUP_FAILED,
                "The user directory is unavailable; try again shortly.",
                f"extra_scopes raised {type(exc).__name__}",
            ) from None
        return AuthCredentials([*principal.scopes, *extra])

    async def _from_token(self, token: str) -> Principal:
        """Verify the token, then admit its user or service; what the claims yield is kept with the token."""
        assert self.verifier is not None
        verified = await self.verifier.verify_token(token)
        identity: _Identity | None = verified.memo
        if identity is None:
            identity = verified.memo = self._identity(verified.claims)
        if identity.email is None:  # an allowed service token: its principal does not change
            assert identity.principal is not None
            return identity.principal
        # A user is looked up on every request: one deleted a second ago must be refused now.
        user = await self._lookup(identity.email)
        if user is True:
            logger.error("cfaccess_mw: user_lookup returned True; it must return the user object or None")
            raise AuthUnavailable(
                Reason.USER_LOOKUP_FAILED,
                "The user directory is unavailable; try again shortly.",
                "user_lookup returned True instead of a user object",
            )
        if not user:  # None, and the False, 0 or "" a yes/no lookup would return
            raise Forbidden(
                Reason.UNKNOWN_USER,
                "This account is not a user of this application; ask an administrator to add it.",
                f"no user with email {identity.email!r}",
            )
        principal = identity.principal
        if principal is None or principal.user is not user:
            principal = identity.principal = Principal("user", email=identity.email, user=user, claims=verified.claims)
        return principal

    def _identity(self, claims: Mapping[str, Any]) -> _Identity:
        """Who verified claims name: a normalised email, or an allowed service (refusals are not remembered)."""
        if "email" in claims:
            email = claims["email"]
            if not isinstance(email, str) or not email.strip():
                raise InvalidToken(
                    Reason.CLAIM_INVALID,
                    "The token's email claim is invalid.",
                    "claim 'email' is empty"
                    if isinstance(email, str)
                    else f"claim 'email' is a {type(email).__name__}",
                )
            email = email.strip()
            # ASCII letters only: str.lower() would fold the Kelvin sign into "k" and let one address pose as
            # another. For an ASCII address (nearly all) lower() is exactly that, and much faster than translate.
            return _Identity(email.lower() if email.isascii() else email.translate(_ASCII_LOWER))
        client_id = claims.get("common_name") if self._cloudflare else None  # service tokens are Cloudflare's
        if isinstance(client_id, str) and client_id:
            name = self._services.get(client_id)
            if name is None:
                raise Forbidden(
                    Reason.SERVICE_TOKEN_NOT_ALLOWED,
                    "This service token is not allowed for this application.",
                    f"service token client ID {client_id!r} is not in CFACCESS_SERVICE_TOKENS",
                )
            return _Identity(None, Principal("service", name=name, claims=claims))
        raise InvalidToken(
            Reason.CLAIM_INVALID,
            "The token names neither a user nor a service token.",
            "the token has no 'email' claim and no usable 'common_name' claim",
        )

    async def _lookup(self, email: str) -> Any:
        if self.user_lookup is None:
            return None
        try:
            if self._lookup_is_async:
                return await self.user_lookup(email)
            user = await run_in_threadpool(self.user_lookup, email)
            if inspect.isawaitable(user):
                user = await user
            return user
        except Exception as exc:
            # The type only: a database error's text can carry a connection string with its password.
            logger.error("cfaccess_mw: user_lookup raised %s", type(exc).__name__)
            raise AuthUnavailable(
                Reason.USER_LOOKUP_FAILED,
                "The user directory is unavailable; try again shortly.",
                f"user_lookup raised {type(exc).__name__}",
            ) from None

    def _principal_from_api_key(self, key: str) -> Principal:
        if key and len(key) <= MAX_API_KEY_LENGTH:
            match = self.settings.find_api_key(hashlib.sha256(key.encode("latin-1")).digest())
            if match is not None:
                return self._api_key_principals[match.name]
        raise Unauthorized(Reason.API_KEY_INVALID, "The API key is not valid.", "no configured API key matches")

    def _is_public(self, path: str) -> bool:
        for public in self._public_paths:
            if path == public or (path.startswith(public) and path[len(public)] == "/"):
                # A dot segment could climb out of the public prefix in whatever serves the path.
                padded = path + "/"
                return "/../" not in padded and "/./" not in padded
        return False

    # --- around the app ----------------------------------------------------------------------

    def _receive_with_startup(self, receive: Receive) -> Receive:
        async def receive_and_prefetch() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and self.jwks is not None:
                await self.jwks.refresh()  # failures are logged; requests then get 503 until keys arrive
            return message

        return receive_and_prefetch

    async def _call_app(self, scope: Scope, receive: Receive, send: Send, principal: Principal | None) -> None:
        """Run the app; an :class:`AuthError` it raises (a FastAPI dependency's) becomes our refusal.

        Only while the app has not started its answer: after that a refusal would be
        spliced into a response already under way (a compressing middleware in between
        would even deliver it as part of a 200), so the error propagates and the server
        drops the connection. The acceptance of ``principal`` is audited when the app
        starts its answer, with its status, so a request that a dependency then refuses
        yields one event, the refusal, not two.
        """
        started = False
        audit = principal is not None and (self.audit_hook is not None or audit_logger.isEnabledFor(logging.INFO))

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if not started:
                started = True
                if audit:
                    await self._audit(scope, "accepted", message.get("status"), principal=principal)
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except AuthError as err:
            if started:
                raise
            await self._refuse(scope, send, err)
            return
        except Exception:
            if audit and not started:
                await self._audit(scope, "accepted", None, principal=principal)
            raise
        if audit and not started:
            await self._audit(scope, "accepted", None, principal=principal)

    async def _refuse(self, scope: Scope, send: Send, err: AuthError) -> None:
        outcome = "unavailable" if isinstance(err, AuthUnavailable) else "refused"
        await self._audit(scope, outcome, err.status_code, err=err)
        await send_error(scope, send, err)

    async def _audit(
        self,
        scope: Scope,
        outcome: Any,
        status: int | None,
        principal: Principal | None = None,
        err: AuthError | None = None,
    ) -> None:
        method, path, client = request_facts(scope)
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
        await emit(event, self.audit_hook)
