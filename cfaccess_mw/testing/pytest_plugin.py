"""pytest fixtures for testing your own app behind cfaccess_mw: a stand-in issuer, and ``CFACCESS_*`` in isolation.

Registered with pytest's ``pytest11`` entry point, so installing cfaccess_mw is enough: no
``pytest_plugins`` line, no conftest. Nothing here runs unless a test asks for a fixture.

``cfaccess_issuer``
    A running stand-in issuer (real keys, its key endpoint on 127.0.0.1) for the preset named by
    ``cfaccess_provider`` (default ``"cloudflare"``; parametrize it, or override the fixture, for
    another). Mint with ``identity_token(email)`` (every preset), ``service_token(client_id)``
    (Cloudflare); send with ``request_headers(token)``; configure an app in code with ``settings()``.
    One issuer per preset for the whole session: keys are slow to make.
``cfaccess_env``
    The environment an app that calls ``Settings.from_env()`` needs: every ``CFACCESS_*`` variable
    already set (a stray one from your shell, ``set -a; . /etc/myapp/env``) is removed for the test,
    the issuer's are set, and ``cfaccess_env.set(CFACCESS_PUBLIC_PATHS="/healthz")`` adds more. All of
    it is undone after the test. Import (or build) the app after asking for it.
``cfaccess_settings``
    ``cfaccess_issuer.settings()``: for an app, or Django's ``CFACCESS_SETTINGS``, that takes a
    ``Settings`` in code; ``cfaccess_issuer.settings(public_paths=("/healthz",))`` for more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..core.settings import Settings
    from .presets import AnyIssuer

PREFIX = "CFACCESS_"


class CfaccessEnv(dict[str, str]):
    """The ``CFACCESS_*`` variables set for this test (strays removed); :meth:`set` adds or replaces some."""

    def __init__(self, issuer: AnyIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.issuer = issuer
        self._monkeypatch = monkeypatch
        for name in [n for n in os.environ if n.startswith(PREFIX)]:
            monkeypatch.delenv(name)
        self.set(**issuer.env())

    def set(self, **variables: str) -> CfaccessEnv:
        """Set ``CFACCESS_*`` variables for this test (``None`` is not a value: pass ``""`` to blank one)."""
        for name, value in variables.items():
            if not name.startswith(PREFIX):
                raise ValueError(f"{name} is not a CFACCESS_* variable")
            self._monkeypatch.setenv(name, value)
            self[name] = value
        return self


class _Issuers:
    """The session's issuers, one per preset, made on first use and stopped when the session ends."""

    def __init__(self) -> None:
        self._started: dict[str, AnyIssuer] = {}

    def get(self, provider: str) -> AnyIssuer:
        from ..core.providers import Provider
        from .presets import ISSUERS

        try:
            preset = Provider(provider)
        except ValueError:
            names = ", ".join(p.value for p in Provider)
            raise pytest.UsageError(f"cfaccess_provider {provider!r} is not one of: {names}") from None
        issuer = self._started.get(preset.value)
        if issuer is None:
            issuer = ISSUERS[preset]().start()
            self._started[preset.value] = issuer
        return issuer

    def stop(self) -> None:
        for issuer in self._started.values():
            issuer.stop()
        self._started.clear()


@pytest.fixture(scope="session")
def _cfaccess_issuers() -> Iterator[_Issuers]:
    issuers = _Issuers()
    try:
        yield issuers
    finally:
        issuers.stop()


@pytest.fixture
def cfaccess_provider() -> str:
    """The preset the ``cfaccess_issuer`` stands in for: ``cloudflare``, ``google-iap``, ``pomerium``, ``aws-alb``
    or ``oidc``. Parametrize it (``@pytest.mark.parametrize("cfaccess_provider", ["pomerium"])``) or override it."""
    return "cloudflare"


@pytest.fixture
def cfaccess_issuer(_cfaccess_issuers: _Issuers, cfaccess_provider: str) -> AnyIssuer:
    """A running stand-in issuer for ``cfaccess_provider`` (shared by the session's tests of that preset)."""
    return _cfaccess_issuers.get(cfaccess_provider)


@pytest.fixture
def cfaccess_env(cfaccess_issuer: AnyIssuer, monkeypatch: pytest.MonkeyPatch) -> CfaccessEnv:
    """Exactly the issuer's ``CFACCESS_*`` variables in ``os.environ`` for this test; ``.set(...)`` adds more."""
    return CfaccessEnv(cfaccess_issuer, monkeypatch)


@pytest.fixture
def cfaccess_settings(cfaccess_issuer: AnyIssuer) -> Settings:
    """``Settings`` trusting the issuer, for an app (or Django's ``CFACCESS_SETTINGS``) configured in code."""
    return cfaccess_issuer.settings()


__all__ = ["CfaccessEnv", "cfaccess_env", "cfaccess_issuer", "cfaccess_provider", "cfaccess_settings"]
