"""TEMPORARY stand-in for the sync core (issue 19, branch ``synccore``): delete when it lands.

Gives :class:`~cfaccess_mw.authenticator.Authenticator` the sync methods the WSGI
and Flask adapters are written against (``identify_sync``, ``authenticate_sync``,
``startup_sync``, ``close_sync``, ``audit_sync``) if it does not have them yet, by
running the async methods on one private event loop per authenticator, in a daemon
thread. Every request thread hands its work to that one loop, so the key cache's
single-flight lock (made for one loop) serves every thread, and a cold burst makes
one fetch. What it does not do, and the real core does: call a plain ``def`` lookup
in the request's own thread (here it hops to the loop's thread pool).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .authenticator import Authenticated, Authenticator
from .errors import AuthError
from .principals import Principal

_T = TypeVar("_T")
_lock = threading.Lock()


def _loop(auth: Authenticator) -> asyncio.AbstractEventLoop:
    """This process's loop thread for ``auth`` (a forked worker, gunicorn ``--preload``, starts its own)."""
    with _lock:
        pid: int | None
        loop: asyncio.AbstractEventLoop | None
        pid, loop = auth.__dict__.get("_standin_loop", (None, None))
        if loop is None or pid != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="cfaccess-sync-standin", daemon=True).start()
            auth.__dict__["_standin_loop"] = (os.getpid(), loop)
        return loop


def _run(auth: Authenticator, work: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run_coroutine_threadsafe(work, _loop(auth)).result()


def identify_sync(self: Authenticator, source: Any) -> Principal:
    return _run(self, self.identify(source))


def authenticate_sync(self: Authenticator, source: Any) -> Authenticated:
    return _run(self, self.authenticate(source))


def startup_sync(self: Authenticator) -> None:
    _run(self, self.startup())


def close_sync(self: Authenticator) -> None:
    _run(self, self.aclose())


def audit_sync(
    self: Authenticator,
    source: Any,
    status: int | None,
    *,
    principal: Principal | None = None,
    err: AuthError | None = None,
) -> None:
    _run(self, self.audit(source, status, principal=principal, err=err))


def install() -> None:
    """Add the stand-in methods where the real ones are missing."""
    for name, method in (
        ("identify_sync", identify_sync),
        ("authenticate_sync", authenticate_sync),
        ("startup_sync", startup_sync),
        ("close_sync", close_sync),
        ("audit_sync", audit_sync),
    ):
        if not hasattr(Authenticator, name):
            setattr(Authenticator, name, method)
