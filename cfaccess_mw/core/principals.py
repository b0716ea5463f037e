"""Who the caller turned out to be: the object that lands in ``scope["user"]``.

It follows Starlette's ``BaseUser`` protocol (``is_authenticated``,
``display_name``, ``identity``) so ``request.user``, ``@requires`` and anything
else built for Starlette's authentication work unchanged. It provides the protocol
rather than subclassing ``BaseUser``: the core imports no web framework, and
nothing in Starlette checks the class, only these attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "KINDS",
    "Principal",
    "PrincipalKind",
]


PrincipalKind = Literal["user", "service", "api_key", "local"]
KINDS: tuple[PrincipalKind, ...] = ("user", "service", "api_key", "local")


@dataclass(frozen=True, eq=False)
class Principal:
    """An authenticated caller.

    ``kind`` says how it proved itself: ``"user"`` (a Cloudflare Access identity
    token whose email is a user of this app), ``"service"`` (an allowed Access
    service token), ``"api_key"`` (a Bearer key) or ``"local"`` (a loopback peer
    in ``local`` exposure mode).
    """

    kind: PrincipalKind
    email: str | None = None
    name: str | None = None
    user: Any = field(default=None, repr=False)
    claims: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.email or self.name or self.kind

    @property
    def identity(self) -> str:
        """``kind:email-or-name``, stable and unique across kinds (for audit logs and rate limits)."""
        return f"{self.kind}:{self.display_name}"

    @property
    def scopes(self) -> list[str]:
        """What goes into ``request.auth.scopes``: ``authenticated`` plus the kind, for ``@requires``."""
        return ["authenticated", self.kind]

    def __repr__(self) -> str:
        return f"Principal(kind={self.kind!r}, display_name={self.display_name!r})"
