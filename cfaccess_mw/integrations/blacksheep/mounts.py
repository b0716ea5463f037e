"""Apps mounted on a BlackSheep app (``app.mount(prefix, asgi_app)``): BlackSheep hands them the request past
its own middleware, so each is wrapped in the ASGI middleware sharing the app's Authenticator, including the
redirect BlackSheep answers for a mount's bare prefix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from blacksheep.server import Application

from ...core.authenticator import Authenticator

#: Where a guarded mount keeps the ``root_path`` BlackSheep gave the mounted app, while the middleware judges.
_MOUNT_ROOT = "cfaccess.mount_root"


def _guard_mounts(app: Application, authenticator: Authenticator) -> None:
    """Put the ASGI middleware in front of every app mounted with ``app.mount(...)`` (once, at start).

    BlackSheep dispatches a mount in ``Application.__call__`` before its own middleware
    chain, so neither the guardpost handler nor the default policy ever sees those
    requests: a mounted app was served to anyone. Each mounted app now gets
    :class:`~cfaccess_mw.middleware.CloudflareAccessMiddleware` sharing this
    Authenticator, judging the full path: BlackSheep has already added the mount's
    prefix to ``root_path``, against which public paths are matched, so the middleware
    sees the ``root_path`` from before the mount, and the mounted app its own again.
    """
    from ..middleware import CloudflareAccessMiddleware

    _guard_mount_redirect(app, authenticator)
    for route in app.mount_registry.mounted_apps:
        if getattr(route.handler, "_cfaccess_guarded", False):
            continue
        mounted = route.handler

        async def restore_root(scope: Any, receive: Any, send: Any, mounted: Any = mounted) -> None:
            scope["root_path"] = scope.pop(_MOUNT_ROOT)
            await mounted(scope, receive, send)

        guarded = CloudflareAccessMiddleware(restore_root, authenticator=authenticator)

        async def judged_from_outside(scope: Any, receive: Any, send: Any, guarded: Any = guarded) -> None:
            root = scope.get("root_path", "")
            scope[_MOUNT_ROOT] = root
            scope["root_path"] = root[: len(root) - len(_mount_prefix(app, scope))]
            await guarded(scope, receive, send)

        judged_from_outside._cfaccess_guarded = True  # type: ignore[attr-defined]
        route.handler = judged_from_outside


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _guard_mount_redirect(app: Application, authenticator: Authenticator) -> None:
    """Put the ASGI middleware in front of BlackSheep's redirect of a browser from ``/mount`` to ``/mount/``.

    BlackSheep answers a navigation (``Sec-Fetch-Mode: navigate``) to a mount's bare path
    with a 307 before the mounted app, guarded or not, is called: anyone learnt which
    mounts exist, and got a redirect where the mount itself answers our 401. The redirect
    is now the guarded app's answer to a caller (or to a public path).
    """
    from ..middleware import CloudflareAccessMiddleware

    redirect = getattr(app, "_handle_redirect_to_mount_root", None)
    if redirect is None or getattr(redirect, "_cfaccess_guarded", False):
        return  # no mount yet (BlackSheep adds the method with the first), or guarded already

    async def redirecting(scope: Any, receive: Any, send: Any) -> None:
        await redirect(scope, send)

    guarded = CloudflareAccessMiddleware(redirecting, authenticator=authenticator)

    async def judged_redirect(scope: Any, send: Any) -> None:
        await guarded(scope, _no_body, send)

    judged_redirect._cfaccess_guarded = True  # type: ignore[attr-defined]
    app._handle_redirect_to_mount_root = judged_redirect  # type: ignore[attr-defined]


def _mount_prefix(app: Application, scope: Any) -> str:
    """What BlackSheep's ``handle_mount_path`` appended to ``root_path`` for this request's mount."""
    for route in app.mount_registry.mounted_apps:
        match = route.match_by_path(scope["raw_path"])
        if match is not None and match.values is not None:
            tail = "/" + str(match.values.get("tail", ""))
            path: str = scope["path"]
            return path[: -len(tail)] if tail != "/" else path.rstrip("/")
    return ""


def _guard_mounts_as_made(app: Application, authenticator: Authenticator) -> None:
    """Guard the apps mounted so far, and each one ``app.mount`` adds later, when it is added.

    ``on_start`` guards them too, but BlackSheep dispatches a mount before it starts
    itself: under a server without lifespan the first requests to a mount would come
    before ``on_start``.
    """
    _guard_mounts(app, authenticator)
    mount = app.mount

    def guarded_mount(path: str, mounted: Callable[..., Any]) -> None:
        mount(path, mounted)
        _guard_mounts(app, authenticator)

    app.mount = guarded_mount  # type: ignore[method-assign,assignment]
