"""What every non-Cloudflare stand-in issuer shares: real keys, its endpoints on 127.0.0.1, and the
``identity_token`` / ``request_headers`` / ``settings`` / ``env`` a test uses (:mod:`.presets` has one per preset)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from ..core.providers import Provider, token_header
from ..core.settings import ExposureMode, Settings
from ..testing import LoopbackKeyServer, Response, new_rsa_key
from .jose import PrivateKey, jws, new_ec_key, public_jwk


class _LoopbackIssuer(LoopbackKeyServer):
    """Keys, a loopback key server (:class:`~cfaccess_mw.testing.LoopbackKeyServer`) and a minter; subclasses
    say what is served where and how tokens look."""

    provider: Provider
    algorithm = "ES256"

    def __init__(self, *, max_requests: int = 100_000, max_seconds: float = 900.0, port: int = 0) -> None:
        super().__init__(max_requests=max_requests, max_seconds=max_seconds, port=port)
        self._keys: dict[str, PrivateKey] = {}
        self.signing_kid = self.add_key()
        #: When set, called for each key request instead of serving the keys (to misbehave on purpose).
        self.responder: Callable[[str], Response] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kids={list(self._keys)!r})"

    # --- keys ---------------------------------------------------------------------------------

    def new_kid(self, key: PrivateKey) -> str:
        return secrets.token_hex(16)

    def add_key(self, key: PrivateKey | None = None) -> str:
        """Publish a key (a new one of this issuer's algorithm unless given); return its kid."""
        if key is None:
            key = new_ec_key() if self.algorithm == "ES256" else new_rsa_key()
        kid = self.new_kid(key)
        self._keys[kid] = key
        return kid

    def rotate(self, keep_old: bool = True) -> str:
        """Publish a new key and sign with it from now on; keep the old one published unless told not to."""
        old = self.signing_kid
        self.signing_kid = self.add_key()
        if not keep_old:
            self.remove_key(old)
        return self.signing_kid

    def remove_key(self, kid: str) -> None:
        del self._keys[kid]

    def private_key(self, kid: str | None = None) -> PrivateKey:
        return self._keys[kid or self.signing_kid]

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def jwks_document(self) -> dict[str, Any]:
        return {"keys": [public_jwk(kid, key) for kid, key in self._keys.items()]}

    # --- tokens -------------------------------------------------------------------------------

    def header(self, kid: str) -> dict[str, Any]:
        return {"alg": self.algorithm, "kid": kid, "typ": "JWT"}

    def mint(
        self, claims: Mapping[str, Any], *, kid: str | None = None, headers: Mapping[str, Any] | None = None
    ) -> str:
        """Sign ``claims`` exactly as given with ``kid``'s key, in this proxy's header shape (``headers`` merged)."""
        kid = kid or self.signing_kid
        return jws(self._keys[kid], {**self.header(kid), **(headers or {})}, claims)

    def identity_token(
        self, email: str, *, lifetime: float | None = None, kid: str | None = None, **claims: Any
    ) -> str:
        """A signed-in user's token, shaped as the proxy shapes it; ``claims`` override or add."""
        payload = self.identity_claims(email, lifetime)
        payload.update(claims)
        return self.mint(payload, kid=kid)

    def identity_claims(self, email: str, lifetime: float | None) -> dict[str, Any]:
        raise NotImplementedError

    # --- configuration ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started; use it as a context manager or call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def header_name(self) -> str:
        """The header the middleware reads the token from, for this issuer's settings."""
        return token_header(self.settings())

    def request_headers(self, token: str) -> dict[str, str]:
        """The header carrying ``token`` as the proxy forwards it (``Authorization: Bearer`` for oidc's default)."""
        name = self.header_name
        return {name: f"Bearer {token}" if name == "authorization" else token}

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"exposure_mode": ExposureMode.REVERSE_PROXY, "provider": self.provider}
        values.update(self.setting_values())
        values.update(overrides)
        return Settings(**values)

    def setting_values(self) -> dict[str, Any]:
        raise NotImplementedError

    def env(self, **overrides: str) -> dict[str, str]:
        """The ``CFACCESS_*`` variables a deployer would set for this issuer."""
        values = {"CFACCESS_EXPOSURE_MODE": "reverse-proxy", "CFACCESS_PROVIDER": self.provider.value}
        names = {
            "audiences": "CFACCESS_AUD",
            "issuers": "CFACCESS_ISSUER",
            "certs_url": "CFACCESS_CERTS_URL",
            "algorithms": "CFACCESS_ALGORITHMS",
            "aws_alb_arns": "CFACCESS_AWS_ALB_ARN",
            "aws_client_id": "CFACCESS_AWS_CLIENT_ID",
            "token_header": "CFACCESS_TOKEN_HEADER",
        }
        for name, value in self.setting_values().items():
            values[names[name]] = ",".join(value) if isinstance(value, tuple) else str(value)
        values.update(overrides)
        return values

    # --- the key server -----------------------------------------------------------------------

    def serve(self, path: str) -> Response:
        raise NotImplementedError

    def answer(self, path: str) -> Response:
        if self.responder is not None:
            return self.responder(path)
        return self.serve(path)


def _json(document: object, extra: Mapping[str, str] | None = None) -> Response:
    return 200, {"Content-Type": "application/json", **(extra or {})}, json.dumps(document).encode()


_NOT_FOUND: Response = (404, {"Content-Type": "text/plain"}, b"not found")
