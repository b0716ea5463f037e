"""What every command shares: the exit codes, the one error type that ends a command, and how lines are printed
(a warning on stderr as ``cfaccess-mw: warning: ...``; a report as aligned rows on stdout)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..core.tokens import human_duration

PROG = "cfaccess-mw"


EXIT_OK = 0


EXIT_FAILED = 1


EXIT_USAGE = 2


EXIT_BUG = 70


class CliError(Exception):
    """Ends the command with one line on stderr and ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class _WarningPrinter(logging.Handler):
    """Shows the package's warnings while a command runs, one line each, on stderr.

    The audit logger is skipped (``demo`` prints its events itself), and so is the
    certs client's own "fetch failed" warning, which the command reports as its error.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("cfaccess_mw.audit"):
            return
        if record.name == "cfaccess_mw.keys" and str(record.msg).startswith("certs endpoint %s failed"):
            return
        if str(record.msg).startswith("cfaccess_mw: configuration error"):
            return  # the command ends with the error itself
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not break the command
            message = str(record.msg)
        message = message.removeprefix("cfaccess_mw: ").replace("\n", " ")
        sys.stderr.write(f"{PROG}: warning: {message}\n")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _row(label: str, value: str) -> None:
    _out(f"  {label:<20} {value}")


def _keys_row(kids: Sequence[str], url: str) -> None:
    _row(f"signing keys ({len(kids)})", f"{', '.join(kids)} from {url}" if kids else f"none usable from {url}")


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _when(value: object, now: float) -> str:
    """``2025-01-01 12:00:00 UTC (in 4 minutes)`` for a NumericDate claim, or why it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} (not a JSON number: the middleware refuses it)"
    try:
        stamp = datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{value!r} (not a usable time)"
    delta = value - now
    if abs(delta) < 1:
        relative = "now"
    else:
        relative = f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(delta)} ago"
    return f"{stamp} ({relative})"


def _shape(claims: Mapping[str, Any]) -> str:
    """What the token claims to be, by the same rule the middleware uses (email first, then common_name)."""
    if "email" in claims:
        return f"an identity (user) token for {claims['email']!r}"
    common_name = claims.get("common_name")
    if isinstance(common_name, str) and common_name:
        return f"a service token with client ID {common_name!r}"
    return "neither an identity token (no 'email') nor a service token (no 'common_name')"
