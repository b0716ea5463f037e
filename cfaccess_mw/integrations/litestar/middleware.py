"""The Litestar middleware: authenticate every connection after Litestar has routed it, judged on the path the
router saw (the mount prefix included), and leave the principal where ``request.user`` reads it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote

from litestar.connection import ASGIConnection
from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.middleware._utils import should_bypass_middleware
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp, Message, Method, Receive, ReceiveMessage, Scope, Scopes, Send
from litestar.utils import normalize_path

from ...core.audit import REQUESTED_PATH
from ...core.authenticator import Authenticator
from ...core.errors import AuthError, send_error
from ...core.principals import Principal
from ..asgi import read_scope
from .guards import (
    AccessRefused,
    _scope_dict,
    refusal_for,
)

#: Where a refusal decided for this connection is kept, so it is audited once and never counted as an acceptance.
_REFUSAL = "cfaccess.refusal"


#: What a websocket app sends to start (or refuse) its answer.
_WS_STARTS = frozenset({"websocket.accept", "websocket.close", "websocket.http.response.start"})


def _read_once(scope: Scope) -> None:
    """ASGI allows any iterable for ``headers`` and ``client``; the authenticator must not use one up before the
    route reads it (:func:`~cfaccess_mw.asgi.read_scope`). Litestar's router has already iterated the headers
    looking for ``Host``, so a spent iterator is replaced by Litestar's own parsed copy (repeated headers kept)."""
    read_scope(_scope_dict(scope), parsed_headers=lambda: Headers.from_scope(scope).to_header_list())


#: The requested path of a mounted app's request whose raw path is missing (never public, never excluded).
_UNKNOWN_PATH = "/<mount>"


def _record_requested_path(scope: Scope) -> None:
    """Keep the path as requested (:data:`~cfaccess_mw.audit.REQUESTED_PATH`), ``root_path`` included as the
    server gave it, for the audit and for judging a mounted app.

    Litestar's router rewrites ``scope["path"]`` before any middleware runs: to the path
    with ``root_path`` removed, and for a mount (``asgi(..., is_mount=True)``,
    ``StaticFilesConfig``) to only the part below it. Judged on that,
    ``/private/healthz`` would match a public ``/healthz``, and ``exclude`` patterns and
    audit events would see ``/healthz``. The path as requested comes back from
    ``raw_path`` (decoded as servers decode it); without one a route keeps Litestar's
    path, and a mount's cannot be known: it is judged on no path at all, authenticated
    whatever ``exclude`` or ``CFACCESS_PUBLIC_PATHS`` say.
    """
    state = _scope_dict(scope)
    raw = state.get("raw_path")
    if isinstance(raw, bytes):
        state[REQUESTED_PATH] = unquote(raw.split(b"?", 1)[0].decode("latin-1"))
    elif getattr(state.get("route_handler"), "is_mount", False):
        state[REQUESTED_PATH] = _UNKNOWN_PATH


def _routed_path(scope: Scope) -> str | None:
    """The whole path Litestar's router matched, below ``root_path``; ``None`` for a mount without a raw path.

    Litestar removes ``root_path`` itself, by splitting the path at its first occurrence
    *anywhere* (``path.split(root_path, 1)[-1]``), and collapses repeated slashes, before
    any middleware runs. Judged on the scope's ``path`` and ``root_path`` instead, a
    request would be read twice: under uvicorn ``--root-path /api``, ``/api/healthz/x``
    routes to ``/api/healthz/x`` (a catch-all route) but, ``/api`` removed once more, would
    match a public ``/healthz``; under hypercorn, which does not put ``root_path`` in the
    path, ``/healthz/api/private/x`` routes to the mount at ``/private``. So for a route the
    path is Litestar's own result (``scope["path"]`` after routing); for a mount, whose
    ``scope["path"]`` is only the part below it, Litestar's steps are repeated on the path
    as requested (``raw_path``, decoded as servers decode it).
    """
    state = _scope_dict(scope)
    if not getattr(state.get("route_handler"), "is_mount", False):
        return state["path"]  # type: ignore[no-any-return]
    requested = state.get(REQUESTED_PATH)
    if requested is None or requested == _UNKNOWN_PATH:
        return None
    root_path: str = state.get("root_path", "")
    return normalize_path(requested.split(root_path, 1)[-1] if root_path else requested)


class AccessAuthenticationMiddleware(AbstractAuthenticationMiddleware):
    """Authenticate each request with the shared :class:`Authenticator`; built by Litestar once per route.

    Never construct one by hand: :attr:`CloudflareAccessAuth.middleware` defines it
    with the config's one Authenticator, so every instance shares one key set and
    one token cache. Bypassed (as Litestar's own auth middleware is) for ``exclude``
    patterns, a route whose ``opt`` holds ``exclude_opt_key``, ``exclude_http_methods``
    (none by default: unlike Litestar's default, OPTIONS is not exempt), and
    ``CFACCESS_PUBLIC_PATHS``; there ``request.user`` is unset.
    """

    __slots__ = ("authenticator",)

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        exclude: str | list[str] | None = None,
        exclude_from_auth_key: str = "exclude_from_auth",
        exclude_http_methods: Sequence[Method] = (),
        scopes: Scopes | None = None,
    ) -> None:
        super().__init__(
            app,
            exclude=exclude,
            exclude_from_auth_key=exclude_from_auth_key,
            exclude_http_methods=exclude_http_methods,
            scopes=scopes,
        )
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _record_requested_path(scope)
        if self._bypass(scope):
            await self.app(scope, receive, send)
            return
        _read_once(scope)
        try:
            result = await self.authenticate_request(ASGIConnection(scope))
        except AccessRefused as exc:
            if scope["type"] == ScopeType.WEBSOCKET:
                await send_error(_scope_dict(scope), receive, send, exc.error)  # type: ignore[arg-type]
                return
            raise  # Litestar's exception handling renders it (with render_refusal) and runs its hooks
        scope["user"] = result.user
        scope["auth"] = result.auth
        await self._call_app(scope, receive, send, result.user)

    def _bypass(self, scope: Scope) -> bool:
        routed = _routed_path(scope)
        if routed is None:
            return False  # a mount whose full path cannot be known: neither public nor excluded
        return should_bypass_middleware(
            exclude_http_methods=self.exclude_http_methods,
            exclude_opt_key=self.exclude_opt_key,
            exclude_path_pattern=self.exclude,
            scope=cast("Scope", {**scope, "path": routed}),  # exclude patterns see the full path too
            scopes=self.scopes,
        ) or self.authenticator.is_public(scope, routed)

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        """The principal and its scopes, or the refusal (audited here) as a Litestar exception."""
        auth = self.authenticator
        try:
            principal, scopes = await auth.authenticate(connection)
        except AuthError as err:
            _scope_dict(connection.scope)[_REFUSAL] = err
            await auth.audit(connection, err.status_code, err=err)
            raise refusal_for(err) from None
        return AuthenticationResult(user=principal, auth=scopes)

    async def _call_app(self, scope: Scope, receive: Receive, send: Send, principal: Principal) -> None:
        """Run the route; audit the acceptance with the status it answers, unless a handler refused instead.

        A refusal raised in the handler or a guard is audited by the config's
        ``after_exception`` hook, which records it in the scope before Litestar answers;
        so the answer is not also counted as an acceptance. In a websocket Litestar
        answers any exception with close code 4500: a refusal's close is replaced by
        ours (the JSON denial or 1008 before accept, 1008 after).
        """
        auth = self.authenticator
        audit = auth.audits_acceptances
        websocket = scope["type"] == ScopeType.WEBSOCKET
        if not audit and not websocket:
            await self.app(scope, receive, send)
            return
        state = _scope_dict(scope)
        started = False
        connected = False

        async def tracking_receive() -> ReceiveMessage:
            nonlocal connected
            message = await receive()
            if message["type"] == "websocket.connect":
                connected = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            refused: AuthError | None = state.get(_REFUSAL)
            if websocket and refused is not None and message["type"] == "websocket.close":
                if not started:
                    started = True
                    await send_error(state, receive, send, refused, connected=connected)  # type: ignore[arg-type]
                    return
                message = {"type": "websocket.close", "code": 1008, "reason": refused.code}
            if not started and (not websocket or message["type"] in _WS_STARTS):
                started = True
                if audit and refused is None:
                    await auth.audit(scope, cast("int | None", message.get("status")), principal=principal)
            await send(message)

        try:
            await self.app(scope, tracking_receive if websocket else receive, tracking_send)
        except Exception:
            if audit and not started and state.get(_REFUSAL) is None:
                await auth.audit(scope, None, principal=principal)
            raise
        if audit and not started and state.get(_REFUSAL) is None:
            await auth.audit(scope, None, principal=principal)
