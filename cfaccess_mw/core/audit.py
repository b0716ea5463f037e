"""One audit event per decision, to the ``cfaccess_mw.audit`` logger and an optional hook.

Events carry the outcome, the reason code, the principal's kind and name or
email, the peer address, the method and the path (never the query string, which
may carry secrets), and never a token, key or header value.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "REQUESTED_PATH",
    "AuditEvent",
    "AuditHook",
    "Outcome",
    "audit_logger",
    "close_unawaited",
    "emit",
    "emit_sync",
    "printable",
    "request_facts",
    "requested_path",
]


audit_logger = logging.getLogger("cfaccess_mw.audit")

#: logging's own memo of the audit logger's verdict per level (``Logger._cache``), emptied by logging whenever any
#: level changes (setLevel, logging.disable, dictConfig); None where an interpreter's logging keeps no such memo.
_LEVELS: dict[int, bool] | None = getattr(audit_logger, "_cache", None)
if not isinstance(_LEVELS, dict):  # pragma: no cover - every CPython from 3.7 keeps it
    _LEVELS = None


def logs_acceptances() -> bool:
    """``audit_logger.isEnabledFor(logging.INFO)``, its answer read from logging's memo when there is one.

    Asked for every accepted request (does anything record it?): the method costs about 0.2 µs, this a dict
    lookup. The same answer: isEnabledFor itself checks ``disabled`` (set by dictConfig without emptying the
    memo), then returns the memo, which it fills on a miss.
    """
    if _LEVELS is not None and not audit_logger.disabled:
        enabled = _LEVELS.get(logging.INFO)
        if enabled is not None:
            return enabled
    return audit_logger.isEnabledFor(logging.INFO)


Outcome = Literal["accepted", "refused", "unavailable"]


@dataclass(frozen=True)
class AuditEvent:
    """What was decided about one request.

    Every text field can come from the request or the token (a path, an email claim,
    a service or key name, a refusal's detail quoting a claim), so each is made
    printable here, in the one place every event passes through: a ``\\n`` or an
    escape sequence in an email claim cannot write a forged line into the log or
    reach an audit hook raw.
    """

    outcome: Outcome
    status: int | None  # None for an acceptance: the app has not answered yet
    method: str
    path: str
    client: str | None
    kind: str | None = None
    principal: str | None = None
    reason: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str) and not value.isprintable():
                object.__setattr__(self, name, printable(value))

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "status": self.status,
            "method": self.method,
            "path": self.path,
            "client": self.client,
            "kind": self.kind,
            "principal": self.principal,
            "reason": self.reason,
            "detail": self.detail,
        }


_TEXT_FIELDS = ("method", "path", "client", "kind", "principal", "reason", "detail")

AuditHook = Callable[[AuditEvent], "Awaitable[None] | None"]


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (``\\n``, ``\\x1b``, ``\\u202e``).

    ASGI paths are percent-decoded, so ``/a%0Aaccepted 200 GET /admin`` arrives
    with a real newline; written as is, it would forge a second audit line.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


#: Scope key an adapter sets when its framework rewrote ``scope["path"]`` before the adapter runs (Litestar gives a
#: mounted app only the part below the mount): the path as the client requested it, which public paths and audit
#: events are judged on.
REQUESTED_PATH = "cfaccess.requested_path"


def requested_path(scope: Mapping[str, Any]) -> str:
    """The path as requested (``root_path`` included, as ASGI has it): the adapter's record where its framework
    rewrote ``scope["path"]``, else ``scope["path"]``."""
    path: str | None = scope.get(REQUESTED_PATH)
    return path if path is not None else scope.get("path", "")


def request_facts(scope: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """Method, path (as requested) and peer address of a request, as they go into an event (made printable there)."""
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client and len(client) == 2 else None
    method = scope.get("method", "WEBSOCKET" if scope["type"] == "websocket" else "")
    return method, requested_path(scope), peer


def emit_sync(event: AuditEvent, hook: AuditHook | None) -> Any:
    """Log the event and hand it to the hook; return what the hook returned when that must be awaited.

    A failing hook is logged, not raised. :func:`emit` awaits an ``async def`` hook's
    result; a sync path (WSGI) cannot, and closes it with an error in the log instead.
    """
    # A refusal with no credential at all is routine (health probes, scanners): INFO, like an acceptance.
    level = logging.INFO if event.outcome == "accepted" or event.reason == "no_credentials" else logging.WARNING
    if audit_logger.isEnabledFor(level):
        who = f" {event.kind}={event.principal}" if event.kind else ""
        why = f" reason={event.reason} ({event.detail})" if event.reason else ""
        audit_logger.log(
            level,
            "%s %s %s %s client=%s%s%s",
            event.outcome,
            "-" if event.status is None else event.status,
            event.method,
            event.path,
            event.client,
            who,
            why,
            extra={"cfaccess": event.as_dict()},
        )
    if hook is not None:
        try:
            result = hook(event)
        except Exception:
            audit_logger.exception("audit hook failed")
        else:
            if inspect.isawaitable(result):
                return result
    return None


async def emit(event: AuditEvent, hook: AuditHook | None) -> None:
    """Log the event and hand it to the hook (awaited when async). A failing hook is logged, not raised."""
    pending = emit_sync(event, hook)
    if pending is not None:
        try:
            await pending
        except Exception:
            audit_logger.exception("audit hook failed")


def close_unawaited(pending: Any) -> None:
    """An async audit hook's result on a sync path: never run, closed so Python does not warn, and said."""
    close = getattr(pending, "close", None)
    if callable(close):
        close()
    audit_logger.error("audit hook failed: it is async, and a sync (WSGI) app cannot await it; use a plain def")
