"""Provider presets: which proxy signs the assertion, and what exactly its tokens must look like.

``CFACCESS_PROVIDER`` picks one preset (default ``cloudflare``, whose rules live in
:mod:`cfaccess_mw.tokens`). Each other preset pins, from configuration and never from
the token: the header the token arrives in, the algorithms allowed, where keys come
from, which claims must match, and the claim that names the user. A token is held
to the same rules as a Cloudflare one (size cap, canonical base64url except where
the proxy itself deviates, JSON-number times, ``exp`` required, ``crit`` and ``b64``
refused, the payload parsed only after the signature verifies).

The facts per proxy, with their sources, are in the README's provider sections:

* ``google-iap``: ``x-goog-iap-jwt-assertion``, ES256, Google's IAP JWKS, ``iss``
  ``https://cloud.google.com/iap``, ``aud`` the configured ``/projects/...`` value,
  ``exp`` and ``iat`` required, a lifetime of at most 10 minutes plus twice the leeway.
* ``pomerium``: ``x-pomerium-jwt-assertion``, ES256 (P-256 only) unless RS256 is
  configured, the route's ``/.well-known/pomerium/jwks.json``, ``iss`` and ``aud``
  the configured route host(s).
* ``aws-alb``: ``x-amzn-oidc-data``, ES256, one PEM key per ``kid`` (a UUID) from the
  region of the configured load balancer ARN, ``signer`` and ``client`` in the
  (signed) header checked against configuration, ``iss`` the IdP's issuer, no ``aud``;
  padded base64url accepted, for this preset only, and verified as received.
* ``oidc``: an OIDC ID token in a configured header (``Authorization: Bearer`` by
  default), keys from the issuer's discovery document, ``aud`` a configured client ID,
  algorithms from a configured allow-list.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from .ec import key_algorithm, parse_ec_jwk
from .jwk import JWKParser, PublicKey, jwk_kid, parse_jwk
from .tokens import (
    _malformed,
    b64url_decode,
)


class Configured(Protocol):
    """What this module reads of a :class:`~cfaccess_mw.settings.Settings` (which it never imports: settings
    imports this module to check the preset's variables, so the dependency runs one way)."""

    @property
    def provider(self) -> Provider: ...
    @property
    def issuers(self) -> tuple[str, ...]: ...
    @property
    def audiences(self) -> tuple[str, ...]: ...
    @property
    def algorithms(self) -> tuple[str, ...]: ...
    @property
    def certs_url(self) -> str | None: ...
    @property
    def token_header(self) -> str | None: ...
    @property
    def aws_alb_arns(self) -> tuple[str, ...]: ...
    @property
    def aws_client_id(self) -> str | None: ...
    @property
    def team_domain(self) -> str | None: ...
    @property
    def service_tokens(self) -> tuple[Any, ...]: ...
    @property
    def allow_cookie(self) -> bool: ...
    @property
    def leeway_seconds(self) -> float: ...


class Provider(str, enum.Enum):
    """The proxy in front of the app, as ``CFACCESS_PROVIDER`` names it."""

    CLOUDFLARE = "cloudflare"
    GOOGLE_IAP = "google-iap"
    POMERIUM = "pomerium"
    AWS_ALB = "aws-alb"
    OIDC = "oidc"

    def __str__(self) -> str:
        return self.value


class KeyKind(str, enum.Enum):
    """Where a preset's keys come from."""

    JWKS = "jwks"  # a JWK Set at a fixed or configured URL
    PEM_PER_KID = "pem-per-kid"  # AWS ALB: one PEM document per kid, at base URL + "/" + kid
    OIDC_DISCOVERY = "oidc-discovery"  # the issuer's /.well-known/openid-configuration names the JWKS


@dataclass(frozen=True)
class Preset:
    """What one proxy's tokens must be: fixed here, filled in from configuration where the proxy varies."""

    provider: Provider
    label: str  # for messages: "Google IAP"
    header: str  # as the proxy's documentation spells it; matched case-insensitively
    algorithms: tuple[str, ...]  # the default allow-list
    allowed_algorithms: tuple[str, ...]  # what CFACCESS_ALGORITHMS may choose from
    keys: KeyKind
    checks_audience: bool = True  # ALB tokens carry no aud: signer and client stand in for it
    fixed_issuer: str | None = None
    default_certs_url: str | None = None
    required_claims: tuple[str, ...] = ("exp",)
    max_lifetime: float | None = None  # exp - iat at most this (plus twice the leeway)
    padded_base64: bool = False
    identity_claim: str = "email"
    #: Claims this proxy documents in the signed JWT *header* (ALB: ``iss`` and ``exp``). Read from there, and
    #: where the payload repeats one, both must agree (see :meth:`PresetProfile.verify`).
    header_claims: tuple[str, ...] = ()
    #: What a refused ``iss`` is told (default: "issued by a different <label> issuer").
    issuer_message: str = ""


#: Google: "https://www.gstatic.com/iap/verify/public_key-jwk" (cloud.google.com/iap/docs/signed-headers-howto).
IAP_JWKS_URL = "https://www.gstatic.com/iap/verify/public_key-jwk"
IAP_ISSUER = "https://cloud.google.com/iap"
#: The IAP page: "The maximum lifetime of a token is 10 minutes + 2 * skew".
IAP_MAX_LIFETIME = 600.0

PRESETS: Mapping[Provider, Preset] = MappingProxyType(
    {
        Provider.CLOUDFLARE: Preset(
            Provider.CLOUDFLARE,
            "Cloudflare Access",
            "Cf-Access-Jwt-Assertion",
            ("RS256",),
            ("RS256",),
            KeyKind.JWKS,
            issuer_message="The token was issued for a different Cloudflare Access team.",
        ),
        Provider.GOOGLE_IAP: Preset(
            Provider.GOOGLE_IAP,
            "Google IAP",
            "x-goog-iap-jwt-assertion",
            ("ES256",),
            ("ES256",),
            KeyKind.JWKS,
            fixed_issuer=IAP_ISSUER,
            default_certs_url=IAP_JWKS_URL,
            required_claims=("exp", "iat"),
            max_lifetime=IAP_MAX_LIFETIME,
        ),
        Provider.POMERIUM: Preset(
            Provider.POMERIUM,
            "Pomerium",
            "X-Pomerium-Jwt-Assertion",
            ("ES256",),
            ("ES256", "RS256"),
            KeyKind.JWKS,
        ),
        Provider.AWS_ALB: Preset(
            Provider.AWS_ALB,
            "AWS ALB",
            "x-amzn-oidc-data",
            ("ES256",),
            ("ES256",),
            KeyKind.PEM_PER_KID,
            checks_audience=False,
            padded_base64=True,
            # AWS's ALB guide, "User claims encoding": the JWT header holds alg, kid, signer, iss, client and exp;
            # the payload holds the IdP's user claims. Newer tokens repeat iss and exp there, older ones do not.
            header_claims=("iss", "exp"),
        ),
        Provider.OIDC: Preset(
            Provider.OIDC,
            "OIDC",
            "Authorization",
            ("RS256",),
            ("RS256", "ES256"),
            KeyKind.OIDC_DISCOVERY,
        ),
    }
)

# --- the token's header (the presets' settings are parsed in preset_settings.py) -----------------

#: The kid of an ALB token goes into a URL path: it must be a UUID, as aws-jwt-verify also requires.
ALB_KID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def token_header(settings: Configured) -> str:
    """The header (lower case) that carries the preset's token."""
    if settings.provider is Provider.OIDC and settings.token_header:
        return settings.token_header
    return PRESETS[settings.provider].header.lower()


# --- keys --------------------------------------------------------------------------------------


def jwk_parser(algorithms: tuple[str, ...]) -> JWKParser:
    """A JWK parser adopting only keys one of ``algorithms`` can use: RSA for RS256, EC P-256 for ES256.

    Every other key (another curve, ``oct``, ``OKP``, RSA when only ES256 is allowed)
    raises ``ValueError``, so the key set skips it and a token naming it gets 401.
    """

    def parse(jwk: object) -> tuple[str, PublicKey]:
        kid = jwk_kid(jwk)  # an object with a kid, whose use and key_ops allow verifying
        assert isinstance(jwk, dict)
        kty = jwk.get("kty")
        if kty == "RSA" and "RS256" in algorithms:
            return parse_jwk(jwk)
        if kty == "EC" and "ES256" in algorithms:
            return kid, parse_ec_jwk(jwk, kid)
        raise ValueError(f"kid {kid!r}: a {kty!r} key is not usable with {', '.join(algorithms)}")

    return parse


def b64url_decode_padded(segment: str, what: str) -> bytes:
    """AWS ALB's base64url: ``=`` padding allowed (exactly as much as the length needs), otherwise as strict.

    Only the ``aws-alb`` preset reads this. The signature is verified over the
    segments as received, padding included, which is what ALB signed.
    """
    stripped = segment.rstrip("=")
    pad = len(segment) - len(stripped)
    if pad and pad != -len(stripped) % 4:
        raise _malformed(f"the {what} has wrong base64url padding")
    return b64url_decode(stripped, what)


def describe_key(key: PublicKey) -> str:
    """``RS256 (RSA-2048)`` or ``ES256 (P-256)``: for ``cfaccess-mw check``."""
    alg = key_algorithm(key)
    return f"{alg} ({'P-256' if alg == 'ES256' else f'RSA-{key.key_size}'})"
