"""The ASGI middleware: put the :class:`~cfaccess_mw.authenticator.Authenticator`'s decision in front of an app.

Per request: ``lifespan`` passes through (the keys are fetched at
``lifespan.startup`` on the way); public paths pass through unauthenticated;
everything else is authenticated, and either reaches the app with
``scope["user"]`` and ``scope["auth"]`` set (what ``request.user``,
``request.auth`` and ``@requires`` read) or is refused with a JSON error (HTTP) or
a refused handshake (websocket).

A configuration error found here (``Settings.from_env()`` run when the framework
builds its middleware stack) is not raised into the framework, which under
uvicorn's ``--lifespan auto`` would turn it into "lifespan unsupported" and a 500
on every request: the middleware answers ``lifespan.startup.failed`` with the
message, so the server stops at start-up naming the variable, and where there is
no lifespan every request gets a 503 ``server_misconfigured``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import httpx
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.audit import AuditHook, logs_acceptances
from ..core.authenticator import Authenticator, ExtraScopes
from ..core.decision import Identity
from ..core.errors import AuthError, AuthUnavailable, ConfigError, Reason, internal_error, send_error
from ..core.principals import Principal
from ..core.settings import Settings
from ..core.users import MISS, UserLookup
from ..core.verifier import TokenVerifier
from ..keys.sources import KeyStore
from .adapter import check_options
from .asgi import read_scope

logger = logging.getLogger("cfaccess_mw")

__all__ = ["CloudflareAccessMiddleware", "UserLookup"]


_new_object = object.__new__


async def _sent() -> None:
    """What ``send`` returns for a message held back: an awaitable that has nothing left to do."""


#: What a websocket app sends to start (or refuse) its answer.
_WS_STARTS = frozenset({"websocket.accept", "websocket.close", "websocket.http.response.start"})


class CloudflareAccessMiddleware:
    """Authenticate every HTTP and websocket request behind Cloudflare Access.

    ``app.add_middleware(CloudflareAccessMiddleware, user_lookup=find_user)`` reads
    ``CFACCESS_*`` from the environment; pass ``settings=Settings(...)`` to be
    explicit, or ``authenticator=Authenticator(...)`` to share one key set and token
    cache between several middleware instances (a framework that builds one per
    route, several mounted apps). The other options are :class:`Authenticator`'s.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator | None = None,
        settings: Settings | None = None,
        user_lookup: UserLookup | None = None,
        audit_hook: AuditHook | None = None,
        extra_scopes: ExtraScopes | None = None,
        jwks: KeyStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        user_cache_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.config_error: ConfigError | None = None
        if authenticator is not None:
            check_options(authenticator, {"settings": settings, "user_lookup": user_lookup, "audit_hook": audit_hook,
                          "extra_scopes": extra_scopes, "jwks": jwks, "transport": transport})  # fmt: skip
            self._authenticator: Authenticator | None = authenticator
            return
        try:
            self._authenticator = Authenticator(
                settings,
                user_lookup=user_lookup,
                audit_hook=audit_hook,
                extra_scopes=extra_scopes,
                jwks=jwks,
                transport=transport,
                clock=clock,
                user_cache_clock=user_cache_clock,
            )
        except ConfigError as err:
            # Raised here it would reach the framework's middleware build, not the deployer: keep it, refuse.
            if not err.logged:
                logger.error("cfaccess_mw: configuration error: %s", err)
            self.config_error = err
            self._authenticator = None

    @property
    def authenticator(self) -> Authenticator:
        """The shared decision; raises the configuration error when the settings were invalid."""
        if self._authenticator is None:
            assert self.config_error is not None
            raise self.config_error
        return self._authenticator

    def forget_user(self, email: str) -> None:
        """Drop ``email``'s user from the user cache (:meth:`Authenticator.forget_user`)."""
        self.authenticator.forget_user(email)

    def forget_all_users(self) -> None:
        """Drop every user from the user cache (:meth:`Authenticator.forget_all_users`)."""
        self.authenticator.forget_all_users()

    @property
    def settings(self) -> Settings:
        return self.authenticator.settings

    @property
    def jwks(self) -> KeyStore | None:
        return self.authenticator.jwks

    @property
    def verifier(self) -> TokenVerifier | None:
        return self.authenticator.verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        auth = self._authenticator
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan":
                if auth is None:
                    await self._fail_lifespan(receive, send)
                    return
                receive = self._receive_with_startup(auth, receive)
            await self.app(scope, receive, send)
            return
        if type(scope["headers"]) is not list or (
            scope.get("client") is not None and type(scope["client"]) is not tuple
        ):
            read_scope(scope)
        if auth is None:
            assert self.config_error is not None
            err = AuthUnavailable(
                Reason.SERVER_MISCONFIGURED,
                "The server is misconfigured; its operator must fix its settings.",
                str(self.config_error),
            )
            await send_error(scope, receive, send, err)
            return
        principal: Principal | None = None
        if auth.public_paths and auth.is_public(scope):
            scope["user"] = UnauthenticatedUser()
            scope["auth"] = AuthCredentials()
        else:
            try:
                # Authenticator.identify's steps, without its coroutine or the pair authenticate returns: this
                # runs on every request. The user lookup is UserDirectory.find's steps, so an async lookup's own
                # coroutine is the only one awaited for a repeated token.
                found = auth.known(scope)
                if type(found) is not Identity and type(found) is not Principal:  # a token to verify afresh
                    found = auth.identified(await auth.verifier.verify_fresh(found))  # type: ignore[union-attr,arg-type]
                if type(found) is Identity:
                    users = auth.users
                    email: str = found.email  # type: ignore[assignment]  # a user's identity has an email
                    generation = users.generation
                    user = users.hit(email)
                    if user is MISS:
                        try:
                            result = await users.ask(email)
                        except Exception as exc:
                            raise users.failure(exc, email) from None
                        user = users.judge(email, result, generation)
                    admitted = auth.admit(found, user)
                else:
                    admitted = found  # type: ignore[assignment]  # an API key's, the local operator's, a service's
                principal = admitted
                scopes = admitted.scopes if auth.extra_scopes is None else auth.scopes_for(admitted)
            except AuthError as err:
                await self._refuse(auth, scope, receive, send, err)
                return
            except Exception as exc:  # a bug while deciding (ours, or a scope no server should send): 503, not 500
                await self._refuse(auth, scope, receive, send, internal_error(exc))
                return
            scope["user"] = principal
            # AuthCredentials(scopes) without __init__, which would copy the list again through list() (0.3 µs
            # against 0.12 µs per request): the same object with the same one attribute, the list this
            # request's alone (Principal.scopes and scopes_for make a new one each time).
            credentials = scope["auth"] = _new_object(AuthCredentials)
            credentials.scopes = scopes
        if scope_type == "websocket":
            await self._call_websocket_app(auth, scope, receive, send, principal)
            return
        # Run the app; an AuthError it raises (a FastAPI dependency's) becomes our refusal. Written out here, not
        # in a method of its own: a coroutine less per request (see _answered for the rules it keeps).
        started = False
        held: list[Message] | None = None  # a 500 answer, until the app has returned or raised
        audit = principal is not None and (auth.audit_hook is not None or logs_acceptances())
        tracking_send: Send
        if audit:

            async def auditing_send(message: Message) -> None:
                nonlocal started, held
                if not started:
                    if held is not None or (message["type"] == "http.response.start" and message["status"] == 500):
                        held = [*(held or ()), message]
                        return
                    started = True
                    await auth.audit(scope, message.get("status"), principal=principal)
                await send(message)

            tracking_send = auditing_send
        else:
            # The common case (nothing records acceptances): a plain function handing back ``send``'s awaitable,
            # which the app awaits; no coroutine of our own per message. ``started`` is set when the app calls
            # ``send``, as the coroutine version sets it before it awaits.
            def marking_send(message: Message) -> Awaitable[None]:
                nonlocal started, held
                if not started:
                    if held is not None or (message["type"] == "http.response.start" and message["status"] == 500):
                        held = [*(held or ()), message]
                        return _sent()
                    started = True
                return send(message)

            tracking_send = marking_send
        try:
            await self.app(scope, receive, tracking_send)
        except AuthError as err:
            if started:
                raise
            await self._refuse(auth, scope, receive, send, err)
            return
        except Exception:
            if held is not None or (audit and not started):
                await self._answered(auth, scope, send, principal if audit and not started else None, held or [])
            raise
        if held is not None or (audit and not started):  # rarely: no coroutine of our own on the common path
            await self._answered(auth, scope, send, principal if audit and not started else None, held or [])

    # --- around the app ----------------------------------------------------------------------

    @staticmethod
    def _receive_with_startup(auth: Authenticator, receive: Receive) -> Receive:
        async def receive_and_prefetch() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await auth.startup()  # failures are logged; requests then get 503 until keys arrive
            elif message["type"] == "lifespan.shutdown":
                await auth.aclose()
            return message

        return receive_and_prefetch

    async def _fail_lifespan(self, receive: Receive, send: Send) -> None:
        """Answer the lifespan protocol ourselves: start-up fails with the configuration error.

        As Starlette's router does with a failing start-up handler: ``lifespan.startup.failed`` with
        the message (uvicorn logs it and exits, whatever its ``--lifespan`` mode), then the error raised.
        """
        assert self.config_error is not None
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed", "message": f"cfaccess_mw: {self.config_error}"})
        raise self.config_error

    @staticmethod
    async def _answered(
        auth: Authenticator, scope: Scope, send: Send, unaudited: Principal | None, held: list[Message]
    ) -> None:
        """The app is done without a refusal: send the 500 it answered (if held), audit an acceptance not yet
        audited (``unaudited``), with the status it answered.

        How :meth:`__call__` runs an HTTP app: an :class:`AuthError` it raises (a FastAPI dependency's) becomes
        our refusal, only while the app has not started its answer: after that a refusal would be
        spliced into a response already under way (a compressing middleware in between
        would even deliver it as part of a 200), so the error propagates and the server
        drops the connection. The acceptance of ``principal`` is audited when the app
        starts its answer, with its status, so a request that a dependency then refuses
        yields one event, the refusal, not two.

        A 500 answer is held back until the app returns. A mounted Starlette or FastAPI
        app (``Mount("/api", app=sub)``, ``app.mount(...)``) has its own
        ``ServerErrorMiddleware``, which answers an exception it does not know, our
        ``AuthError`` included, with a plain-text 500 *before* re-raising it: held, that
        500 is dropped when the exception turns out to be a refusal, and our JSON error is
        sent instead. Any other 500 goes out as it was, when the app returns or raises.
        """
        if unaudited is not None:
            await auth.audit(scope, held[0]["status"] if held else None, principal=unaudited)
        for message in held:
            await send(message)

    async def _call_websocket_app(
        self, auth: Authenticator, scope: Scope, receive: Receive, send: Send, principal: Principal | None
    ) -> None:
        """:meth:`__call__`'s run of the app for a websocket: its answer starts with an accept, a close or a
        denial response, and a refusal must know whether the app already consumed ``websocket.connect``."""
        started = False
        connected = False  # whether the app consumed websocket.connect (a refusal must not wait for it again)
        audit = principal is not None and auth.audits_acceptances

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if not started and message["type"] in _WS_STARTS:
                started = True
                if audit:
                    await auth.audit(scope, message.get("status"), principal=principal)
            await send(message)

        async def tracking_receive() -> Message:
            nonlocal connected
            message = await receive()
            if message["type"] == "websocket.connect":
                connected = True
            return message

        try:
            await self.app(scope, tracking_receive, tracking_send)
        except AuthError as err:
            if started:
                raise
            await self._refuse(auth, scope, receive, send, err, connected=connected)
            return
        except Exception:
            if audit and not started:
                await auth.audit(scope, None, principal=principal)
            raise
        if audit and not started:
            await auth.audit(scope, None, principal=principal)

    @staticmethod
    async def _refuse(
        auth: Authenticator, scope: Scope, receive: Receive, send: Send, err: AuthError, *, connected: bool = False
    ) -> None:
        await auth.audit(scope, err.status_code, err=err)
        await send_error(scope, receive, send, err, connected=connected)

    def __repr__(self) -> str:
        state = "misconfigured" if self._authenticator is None else repr(self._authenticator)
        return f"CloudflareAccessMiddleware({state})"
