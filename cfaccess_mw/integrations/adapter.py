"""What every framework adapter's constructor shares: an :class:`Authenticator` given, or the options to build one.

An adapter takes either ``authenticator=`` (one key set and token cache shared by
several apps, or by an adapter and the ASGI middleware) or the Authenticator's own
options, never both: options given beside an authenticator would be silently
ignored, so :func:`check_options` refuses them. :class:`DeferredAuthenticator` is the
Flask-style extension's variant (Quart, Sanic), which builds its Authenticator when
``init_app`` asks for it, so a module-level ``CloudflareAccess()`` reads no settings
at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.authenticator import Authenticator

__all__ = ["DeferredAuthenticator", "check_options"]


def check_options(authenticator: Authenticator | None, options: Mapping[str, object]) -> None:
    """Raise ``TypeError`` naming the ``options`` given (not ``None``) beside an ``authenticator``."""
    if authenticator is None:
        return
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise TypeError(f"pass either authenticator or {', '.join(given)}, not both")


class DeferredAuthenticator:
    """An extension's Authenticator: the one given, or one built on first use from ``options`` (checked now)."""

    def __init__(self, authenticator: Authenticator | None, options: Mapping[str, Any], **defaults: Any) -> None:
        check_options(authenticator, options)
        self._authenticator = authenticator
        self._options: dict[str, Any] = {**options, **defaults}

    @property
    def authenticator(self) -> Authenticator:
        """The shared decision, built on first use from the options (reading ``CFACCESS_*`` if no settings)."""
        if self._authenticator is None:
            options = dict(self._options)
            self._authenticator = Authenticator(options.pop("settings"), **options)
        return self._authenticator

    def __repr__(self) -> str:
        state = repr(self._authenticator) if self._authenticator is not None else "not initialised"
        return f"{type(self).__name__}({state})"
