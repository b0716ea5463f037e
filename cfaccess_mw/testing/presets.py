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

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

from ..core.providers import IAP_ISSUER, Provider, token_header
from ..core.settings import ExposureMode, Settings
from ..testing import LocalIssuer, LoopbackKeyServer, Response, new_rsa_key

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


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A fresh EC private key (P-256 unless told otherwise)."""
    return ec.generate_private_key(curve or ec.SECP256R1())


def _b64(data: bytes, padded: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(data).decode("ascii")
    return encoded if padded else encoded.rstrip("=")


def _int_b64(value: int, size: int) -> str:
    return _b64(value.to_bytes(size, "big"))


def public_jwk(kid: str, key: PrivateKey) -> dict[str, Any]:
    """The JWK a proxy publishes for ``key``: ``kty``, ``crv``/``x``/``y`` or ``n``/``e``, ``kid``, ``alg``, ``use``."""
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(public.curve.name, "secp256k1")
        return {
            "kty": "EC",
            "crv": crv,
            "x": _int_b64(numbers.x, size),
            "y": _int_b64(numbers.y, size),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        }
    rsa_numbers = public.public_numbers()
    return {
        "kty": "RSA",
        "n": _int_b64(rsa_numbers.n, (rsa_numbers.n.bit_length() + 7) // 8),
        "e": _int_b64(rsa_numbers.e, 3),
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
    }


def sign(key: PrivateKey, signing_input: bytes) -> bytes:
    """A JWS signature: raw ``r || s`` (32 bytes each on P-256) for EC, PKCS#1 v1.5 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(SHA256())))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(signing_input, PKCS1v15(), SHA256())


def jws(key: PrivateKey, header: Mapping[str, Any], payload: Mapping[str, Any] | bytes, padded: bool = False) -> str:
    """A compact JWS over any header and payload (a claims object or raw bytes), signed with ``key``."""
    head = _b64(json.dumps(header, separators=(",", ":")).encode(), padded)
    raw = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    body = _b64(raw, padded)
    signing_input = f"{head}.{body}"
    return f"{signing_input}.{_b64(sign(key, signing_input.encode('ascii')), padded)}"


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
