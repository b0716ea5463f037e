"""Where the package's log records go when the application configured no logging.

A library logs and the application decides where records go; but an app run as
``uvicorn myapp:app`` with no logging set-up would then never see what its operator
must act on: an unknown ``CFACCESS_*`` variable (a typo that drops a setting), the
signing keys failing at start-up (every user gets 503), a user lookup that raises.
Python's own answer, the "last resort" handler that prints WARNING and above on
stderr when no handler is found, is defeated by the ``NullHandler`` libraries
traditionally add, and would also print every refused request.

So the ``cfaccess_mw`` logger gets :class:`FallbackHandler` instead: it prints a
record on stderr only when no other handler anywhere in the record's path (its
logger, its parents, the root) would receive it, i.e. only while the app has set up
no logging that reaches us. Once the app configures logging (``basicConfig``,
``dictConfig``, pytest's capture), it stays silent and the app's handlers decide.
It leaves out the audit logger (one record per request, which an app opts into) and
prints each distinct warning once, so a lookup failing on every request is one line,
not a flood. Records never carry a token, key or header value (the package's rule),
so nothing secret is printed here either.
"""

from __future__ import annotations

import logging
import sys
import threading

#: Records from here are per-request decisions, for an app that configured an audit log.
AUDIT_LOGGER = "cfaccess_mw.audit"
#: Distinct warnings remembered for "print once"; past this, repeats print again (memory stays bounded).
MAX_REMEMBERED = 256
HANDLER_NAME = "cfaccess_mw.fallback"


def _has_other_handler(logger: logging.Logger, me: logging.Handler) -> bool:
    """Whether a handler other than ``me`` (and other than a NullHandler) would see a record of ``logger``.

    The same walk :meth:`logging.Logger.callHandlers` makes: up the parents while ``propagate`` holds.
    """
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if handler is not me and not isinstance(handler, logging.NullHandler):
                return True
        if not current.propagate:
            return False
        current = current.parent  # the root's parent is None
    return False


class FallbackHandler(logging.Handler):
    """Prints the package's records on stderr while no other handler would receive them.

    WARNING and above print once per distinct message (``cfaccess_mw WARNING: ...``);
    a record below WARNING reaches this handler only when the app lowered a package
    logger's level on purpose (``logging.getLogger("cfaccess_mw.users").setLevel(logging.DEBUG)``),
    so it prints every time.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        self._seen: set[tuple[str, int, str]] = set()
        self._seen_lock = threading.Lock()
        self._told_how = False

    def filter(self, record: logging.LogRecord) -> bool:
        """Decided before the handler's lock is taken: the audit log (a record per refusal) costs one comparison."""
        if record.name == AUDIT_LOGGER or record.name.startswith(AUDIT_LOGGER + "."):
            return False
        return not _has_other_handler(logging.getLogger(record.name), self) and bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace("cfaccess_mw: ", "", 1)
        except Exception:  # a malformed log call must not break the request that made it
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            key = (record.name, record.levelno, text)
            with self._seen_lock:
                if key in self._seen:
                    return
                if len(self._seen) >= MAX_REMEMBERED:
                    self._seen.clear()
                self._seen.add(key)
                first, self._told_how = not self._told_how, True
            if first:
                text += (
                    "\n  (cfaccess_mw: no logging is configured, so its warnings are shown here on stderr, each "
                    "once; configure logging, e.g. logging.basicConfig(level=logging.INFO), to see them all)"
                )
        stream = sys.stderr  # looked up each time, as Python's last-resort handler does (pytest swaps it)
        if stream is None:  # pythonw: no console at all
            return
        try:
            stream.write(text + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def install() -> FallbackHandler:
    """Give the ``cfaccess_mw`` logger its fallback handler, once (re-importing the package adds no second one)."""
    package_logger = logging.getLogger("cfaccess_mw")
    for handler in package_logger.handlers:
        if isinstance(handler, FallbackHandler) or handler.get_name() == HANDLER_NAME:
            return handler  # type: ignore[return-value]  # a FallbackHandler of an earlier import of this module
    handler = FallbackHandler()
    handler.set_name(HANDLER_NAME)
    package_logger.addHandler(handler)
    return handler
