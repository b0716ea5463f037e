"""One :class:`Authenticator` per configuration: built from Django's settings (``CFACCESS_SETTINGS``,
``CFACCESS_USER_LOOKUP``, ...) the first time a middleware needs it, shared by every middleware instance after,
with the keys fetched before the first request."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ...core.audit import AuditHook
from ...core.authenticator import Authenticator, ExtraScopes, UserLookup
from ...core.settings import Settings
from ...core.users import is_async_callable

if TYPE_CHECKING:
    pass

DEFAULT_USER_LOOKUP = "cfaccess_mw.django.user_model_lookup"


_lock = threading.Lock()
#: Shared while some middleware instance holds it: the test client builds a handler (and so a middleware) per
#: client, and an ASGI and a WSGI handler in one process each build their own.
_shared: weakref.WeakValueDictionary[tuple[Any, ...], Authenticator] = weakref.WeakValueDictionary()


def _setting(name: str, default: object = None) -> Any:
    """A Django setting holding a callable or its dotted path (``None`` for none)."""
    value = getattr(django_settings, name, default)
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(f"{name}: cannot import {value!r}: {exc}") from None
    if value is not None and not callable(value):
        raise ImproperlyConfigured(f"{name} must be a callable or its dotted path, not {type(value).__name__}")
    return value


def authenticator_from_settings() -> Authenticator:
    """The :class:`Authenticator` the Django settings describe, shared by every middleware built from them.

    A new one fetches its keys before it is returned (the start-up Django does not
    signal). ``Settings.from_env()`` runs here when ``CFACCESS_SETTINGS`` is unset,
    so a bad ``CFACCESS_*`` variable stops ``get_asgi_application()`` with a
    ``ConfigError`` naming it.
    """
    settings = getattr(django_settings, "CFACCESS_SETTINGS", None)
    if settings is None:
        settings = Settings.from_env()
    elif not isinstance(settings, Settings):
        raise ImproperlyConfigured(f"CFACCESS_SETTINGS must be a cfaccess_mw.Settings, not {type(settings).__name__}")
    user_lookup: UserLookup | None = _setting("CFACCESS_USER_LOOKUP", DEFAULT_USER_LOOKUP)
    extra_scopes: ExtraScopes | None = _setting("CFACCESS_EXTRA_SCOPES")
    audit_hook: AuditHook | None = _setting("CFACCESS_AUDIT_HOOK")
    key: tuple[object, ...] = (settings, user_lookup, extra_scopes, audit_hook)
    try:
        hash(key)
    except TypeError:  # a Settings field that cannot be hashed: share nothing rather than guess
        key = (object(),)
    with _lock:
        auth = _shared.get(key)
        if auth is not None:
            return auth
        auth = Authenticator(
            settings, user_lookup=_with_sync_twin(user_lookup), extra_scopes=extra_scopes, audit_hook=audit_hook
        )
        _shared[key] = auth
    _prefetch(auth)
    return auth


class _AsyncLookup:
    """An ``async def`` lookup as the app wrote it, with ``async_to_sync`` as its twin for the WSGI path.

    The sync middleware calls a lookup in the worker thread; an async one runs there the
    way Django runs async code from sync code. (``user_model_lookup`` has a sync twin of
    its own, with no event loop at all.)
    """

    def __init__(self, lookup: Callable[[str], Awaitable[Any]]) -> None:
        self.lookup = lookup
        self.sync = async_to_sync(lookup)

    async def __call__(self, email: str) -> Any:
        return await self.lookup(email)


def _with_sync_twin(lookup: UserLookup | None) -> UserLookup | None:
    if lookup is None or not is_async_callable(lookup) or callable(getattr(lookup, "sync", None)):
        return lookup
    return _AsyncLookup(cast(Callable[[str], Awaitable[Any]], lookup))


def _prefetch(auth: Authenticator) -> None:
    """Fetch the keys now, with the sync client, bounded by the fetch's own timeout.

    It runs while Django builds its middleware chain: at import under ASGI
    (``get_asgi_application()``, inside the server's loop, which is held for at most
    the timeout, once), when a WSGI server loads the app, and at the test client's
    first request. A failure is logged by the key client; requests then get 503 until
    a fetch succeeds.
    """
    auth.startup_sync()
