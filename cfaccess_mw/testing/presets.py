"""Local stand-ins for Google IAP, Pomerium, AWS ALB and an OIDC provider, for your own tests.

Each one is the :class:`~cfaccess_mw.testing.LocalIssuer` of its proxy: real keys,
its key endpoint served over real HTTP on 127.0.0.1 at the path the proxy uses, and
tokens minted in that proxy's real shape (header fields, claims, encoding, ALB's
padding included). The server binds loopback only, answers a bounded number of
requests and stops itself after ``max_seconds``.

    with GoogleIapIssuer() as iap:
        app.add_middleware(CloudflareAccessMiddleware, settings=iap.settings(), user_lookup=find)
        headers = {"x-goog-iap-jwt-assertion": iap.identity_token("alice@example.com")}
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization

from ..core.providers import IAP_ISSUER, Provider
from ..testing import LocalIssuer, Response
from .base import _NOT_FOUND, _json, _LoopbackIssuer
from .jose import PrivateKey, jws, new_ec_key, public_jwk, sign

__all__ = [
    "ISSUERS",
    "AlbIssuer",
    "AnyIssuer",
    "GoogleIapIssuer",
    "OidcIssuer",
    "PomeriumIssuer",
    "PrivateKey",
    "jws",
    "new_ec_key",
    "public_jwk",
    "sign",
]


class GoogleIapIssuer(_LoopbackIssuer):
    """Google IAP: ES256 tokens for ``x-goog-iap-jwt-assertion``, keys at ``/iap/verify/public_key-jwk``."""

    provider = Provider.GOOGLE_IAP
    JWKS_PATH = "/iap/verify/public_key-jwk"

    def __init__(self, *, audience: str = "/projects/123456789012/apps/example-project", **options: Any) -> None:
        self.audience = audience
        super().__init__(**options)

    def identity_claims(self, email: str, lifetime: float | None) -> dict[str, Any]:
        """IAP's claims: ``iss``, ``aud`` (one string), ``iat``, ``exp`` (10 minutes), ``sub``, ``email``, ``hd``."""
        issued = int(time.time())
        return {
            "aud": self.audience,
            "email": email,
            "exp": issued + int(600 if lifetime is None else lifetime),
            "hd": email.rpartition("@")[2],
            "iat": issued,
            "iss": IAP_ISSUER,
            "sub": f"accounts.google.com:{secrets.randbelow(10**20)}",
        }

    def setting_values(self) -> dict[str, Any]:
        return {"audiences": (self.audience,), "certs_url": self.base_url + self.JWKS_PATH}

    def serve(self, path: str) -> Response:
        return _json(self.jwks_document()) if path == self.JWKS_PATH else _NOT_FOUND


class PomeriumIssuer(_LoopbackIssuer):
    """Pomerium: ``X-Pomerium-Jwt-Assertion``, kid = the key's JWK thumbprint, keys at the route's well-known path."""

    provider = Provider.POMERIUM
    JWKS_PATH = "/.well-known/pomerium/jwks.json"

    def __init__(self, *, route_host: str = "app.example.test", algorithm: str = "ES256", **options: Any) -> None:
        self.route_host = route_host
        self.algorithm = algorithm
        super().__init__(**options)

    def new_kid(self, key: PrivateKey) -> str:
        """Pomerium's kid: hex SHA-256 of the RFC 7638 thumbprint input."""
        jwk = public_jwk("", key)
        members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
        canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def identity_claims(self, email: str, lifetime: float | None) -> dict[str, Any]:
        """Pomerium's claims: ``iss`` and ``aud`` the route host, ``iat``, ``exp`` (5 minutes), the user's ids."""
        issued = int(time.time())
        user = secrets.token_hex(12)
        return {
            "aud": self.route_host,
            "email": email,
            "exp": issued + int(300 if lifetime is None else lifetime),
            "groups": [],
            "iat": issued,
            "iss": self.route_host,
            "jti": str(uuid.uuid4()),
            "name": email.partition("@")[0],
            "sid": secrets.token_hex(16),
            "sub": user,
            "user": user,
        }

    def setting_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "issuers": (self.route_host,),
            "audiences": (self.route_host,),
            "certs_url": self.base_url + self.JWKS_PATH,
        }
        if self.algorithm != "ES256":
            values["algorithms"] = (self.algorithm,)
        return values

    def serve(self, path: str) -> Response:
        if path != self.JWKS_PATH:
            return _NOT_FOUND
        return _json(self.jwks_document(), {"Cache-Control": "max-age=60"})


class AlbIssuer(_LoopbackIssuer):
    """AWS ALB: ``x-amzn-oidc-data``, padded base64url, ``signer``/``client``/``iss``/``exp`` in the header,
    one PEM key per UUID kid at ``/<kid>``."""

    provider = Provider.AWS_ALB

    def __init__(
        self,
        *,
        region: str = "eu-west-1",
        account: str = "123456789012",
        client_id: str = "4sa7l1tqb5example0client",
        idp_issuer: str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Example",
        **options: Any,
    ) -> None:
        self.arn = f"arn:aws:elasticloadbalancing:{region}:{account}:loadbalancer/app/example-alb/50dc6c495c0c9188"
        self.client_id = client_id
        self.idp_issuer = idp_issuer
        super().__init__(**options)

    def new_kid(self, key: PrivateKey) -> str:
        return str(uuid.uuid4())

    def header(self, kid: str) -> dict[str, Any]:
        return {
            "alg": "ES256",
            "kid": kid,
            "signer": self.arn,
            "iss": self.idp_issuer,
            "client": self.client_id,
            "exp": int(time.time()) + 120,
            "typ": "JWT",
        }

    def mint(
        self, claims: Mapping[str, Any], *, kid: str | None = None, headers: Mapping[str, Any] | None = None
    ) -> str:
        """ALB's encoding: every segment base64url *with* ``=`` padding, the signature over the padded text."""
        kid = kid or self.signing_kid
        header = {**self.header(kid), **(headers or {})}
        if "exp" in claims and "exp" not in (headers or {}):
            header["exp"] = claims["exp"]
        return jws(self._keys[kid], header, claims, padded=True)

    def identity_claims(self, email: str, lifetime: float | None) -> dict[str, Any]:
        """The IdP's userinfo claims plus ``exp`` and ``iss``; no ``aud``, no ``iat``; ``email_verified`` a string."""
        return {
            "sub": str(uuid.uuid4()),
            "email_verified": "true",
            "email": email,
            "username": str(uuid.uuid4()),
            "exp": int(time.time()) + int(120 if lifetime is None else lifetime),
            "iss": self.idp_issuer,
        }

    def pem(self, kid: str) -> bytes:
        return (
            self._keys[kid]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def setting_values(self) -> dict[str, Any]:
        return {
            "issuers": (self.idp_issuer,),
            "aws_alb_arns": (self.arn,),
            "aws_client_id": self.client_id,
            "certs_url": self.base_url + "/keys",
        }

    def serve(self, path: str) -> Response:
        prefix, _, kid = path.rpartition("/")
        if prefix != "/keys" or kid not in self._keys:
            return 404, {"Content-Type": "text/plain"}, b"not found"
        return 200, {"Content-Type": "application/x-pem-file"}, self.pem(kid)


class OidcIssuer(_LoopbackIssuer):
    """An OpenID provider: its issuer is its own loopback URL, with a discovery document and a JWKS.

    ``algorithm`` is ``RS256`` (most IdPs) or ``ES256``.
    """

    provider = Provider.OIDC
    DISCOVERY_PATH = "/.well-known/openid-configuration"
    JWKS_PATH = "/protocol/openid-connect/certs"

    def __init__(
        self,
        *,
        client_id: str = "oauth2-proxy",
        algorithm: str = "RS256",
        token_header: str | None = None,
        **options: Any,
    ) -> None:
        self.client_id = client_id
        self.algorithm = algorithm
        self.token_header = token_header
        super().__init__(**options)

    @property
    def issuer(self) -> str:
        return self.base_url

    def identity_claims(self, email: str, lifetime: float | None) -> dict[str, Any]:
        """An ID token: ``iss``, ``sub``, ``aud`` (the client ID), ``exp``, ``iat``, ``email``, ``email_verified``."""
        issued = int(time.time())
        return {
            "iss": self.issuer,
            "sub": secrets.token_hex(12),
            "aud": self.client_id,
            "azp": self.client_id,
            "exp": issued + int(300 if lifetime is None else lifetime),
            "iat": issued,
            "auth_time": issued,
            "email": email,
            "email_verified": True,
            "name": email.partition("@")[0],
        }

    def setting_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"issuers": (self.issuer,), "audiences": (self.client_id,)}
        if self.algorithm != "RS256":
            values["algorithms"] = (self.algorithm,)
        if self.token_header is not None:
            values["token_header"] = self.token_header
        return values

    def discovery_document(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/auth",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + self.JWKS_PATH,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.algorithm],
        }

    def serve(self, path: str) -> Response:
        if path == self.DISCOVERY_PATH:
            return _json(self.discovery_document())
        if path == self.JWKS_PATH:
            return _json(self.jwks_document())
        return _NOT_FOUND


#: The stand-in issuer of each preset: ``ISSUERS[Provider.POMERIUM]()`` is a :class:`PomeriumIssuer`.
#: Each mints a signed-in user's token with ``identity_token(email)`` and says where it goes with
#: ``request_headers(token)``; :class:`~cfaccess_mw.testing.LocalIssuer` (Cloudflare) also mints
#: ``service_token(client_id)``.
AnyIssuer = LocalIssuer | _LoopbackIssuer
ISSUERS: Mapping[Provider, type[LocalIssuer] | type[_LoopbackIssuer]] = {
    Provider.CLOUDFLARE: LocalIssuer,
    Provider.GOOGLE_IAP: GoogleIapIssuer,
    Provider.POMERIUM: PomeriumIssuer,
    Provider.AWS_ALB: AlbIssuer,
    Provider.OIDC: OidcIssuer,
}
