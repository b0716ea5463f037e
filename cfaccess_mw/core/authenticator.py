"""The decision and its I/O: :class:`Authenticator`, one configuration's answer to "who is calling?".

It holds everything one configuration needs (settings, the key set, the verified-token cache, the user lookup,
the audit hook) and answers one question per request, through :class:`~cfaccess_mw.core.decision.Decision`'s
I/O-free steps and two drivers that fetch what those steps ask for: :meth:`Authenticator.identify` on an event
loop, :meth:`Authenticator.identify_sync` in a thread (WSGI). The ASGI middleware and every framework adapter
share it, so an app has one key set and one token cache however many middleware instances its framework builds
(Litestar builds one per route handler).

What a request is made of here is the ASGI scope, or anything with a ``scope``
attribute (Starlette's, Litestar's, Django's and Falcon's request objects): only
``type``, ``headers``, ``client``, ``path``, ``root_path``, ``method`` and (local mode) ``scheme`` are read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

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
)
from .decision import Decision, ExtraScopes, Identity
from .errors import AuthError, AuthUnavailable
from .principals import Principal
from .profiles import build_profile
from .request import scope_of
from .settings import Settings
from .users import UserDirectory, UserLookup
from .verifier import TokenVerifier

logger = logging.getLogger("cfaccess_mw")

__all__ = ["Authenticated", "Authenticator", "ExtraScopes", "UserLookup"]


class Authenticated(NamedTuple):
    """A caller that proved who it is: the principal, and every scope it holds (``extra_scopes`` applied)."""

    principal: Principal
    scopes: list[str]


class Authenticator(Decision):
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
        super().__init__(
            settings if settings is not None else Settings.from_env(),
            user_lookup=user_lookup,
            extra_scopes=extra_scopes,
        )
        self.audit_hook = audit_hook
        self.users = UserDirectory(
            user_lookup,
            cache_seconds=self.settings.user_cache_seconds,
            cache_size=self.settings.user_cache_size,
            timer=user_cache_clock,
        )
        self.jwks: KeyStore | None = None
        self.verifier: TokenVerifier | None = None
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

    def forget_user(self, email: str) -> None:
        """Drop ``email``'s user from the user cache (call it when the app deletes or disables the user)."""
        self.users.forget(email)

    def forget_all_users(self) -> None:
        """Drop every user from the user cache."""
        self.users.forget_all()

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
