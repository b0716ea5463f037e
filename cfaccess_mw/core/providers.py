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
from urllib.parse import SplitResult, urlsplit

from .ec import key_algorithm, parse_ec_jwk
from .errors import ConfigError, Reason
from .exposure import is_loopback_url_host
from .jwk import JWKParser, PublicKey, jwk_kid, parse_jwk
from .tokens import (
    _json_object,
    _malformed,
    b64url_decode,
    human_duration,
    split_token,
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

# --- configuration ---------------------------------------------------------------------------

_HOST = re.compile(r"(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
_IAP_AUDIENCE = re.compile(r"/projects/[0-9]{1,20}/[A-Za-z0-9._~/-]{1,400}")
_PRINTABLE = re.compile(r"[!-~]{1,512}")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,64}")  # an RFC 9110 token, lower-cased
#: arn:PARTITION:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID
_ALB_ARN = re.compile(
    r"arn:(aws|aws-us-gov):elasticloadbalancing:([a-z]{2}(?:-gov)?-[a-z]+-[0-9]):([0-9]{12}):"
    r"loadbalancer/app/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}"
)
#: The kid of an ALB token goes into a URL path: it must be a UUID, as aws-jwt-verify also requires.
ALB_KID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Headers that can never carry the token: they mean something else to every HTTP stack.
_RESERVED_HEADERS = frozenset({"cookie", "host", "content-length", "content-type", "transfer-encoding", "connection"})

VARIABLES = {
    "provider": "CFACCESS_PROVIDER",
    "issuers": "CFACCESS_ISSUER",
    "algorithms": "CFACCESS_ALGORITHMS",
    "token_header": "CFACCESS_TOKEN_HEADER",
    "aws_alb_arns": "CFACCESS_AWS_ALB_ARN",
    "aws_client_id": "CFACCESS_AWS_CLIENT_ID",
}
#: The settings only some presets read, and which.
_ONLY_FOR: Mapping[str, tuple[Provider, ...]] = {
    "issuers": (Provider.POMERIUM, Provider.AWS_ALB, Provider.OIDC, Provider.GOOGLE_IAP),
    "algorithms": (Provider.POMERIUM, Provider.OIDC, Provider.GOOGLE_IAP, Provider.AWS_ALB),
    "token_header": (Provider.OIDC,),
    "aws_alb_arns": (Provider.AWS_ALB,),
    "aws_client_id": (Provider.AWS_ALB,),
}


def parse_provider(value: object) -> Provider:
    """``CFACCESS_PROVIDER`` to a :class:`Provider`, or a :class:`ConfigError` listing the choices."""
    try:
        return Provider(value.strip().lower() if isinstance(value, str) else value)
    except ValueError:
        choices = ", ".join(p.value for p in Provider)
        raise ConfigError("CFACCESS_PROVIDER", f"{value!r} is not one of: {choices}") from None


def _fail(name: str, problem: str) -> ConfigError:
    return ConfigError(VARIABLES.get(name, name), problem)


def _url_parts(url: str, variable: str) -> SplitResult:
    """``urlsplit`` with its port read, so a broken host or port is a ConfigError now, not a ValueError or
    a URL every fetch refuses (a 503 on every request) later."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise ConfigError(variable, f"{url!r} is not a valid URL ({exc})") from None
    return parts


def _https_or_loopback(url: str, variable: str) -> str:
    parts = _url_parts(url, variable)
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ConfigError(variable, f"{url!r} must not carry a user name, password, query or fragment")
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and host and is_loopback_url_host(host):
        return url
    raise ConfigError(variable, f"{url!r} must be an https:// URL (plain http:// only for a loopback host)")


def _route_host(value: str, variable: str) -> str:
    host = value.strip().lower()
    if not _HOST.fullmatch(host) or "." not in host:
        raise ConfigError(variable, f"{value!r} is not a host name such as app.example.com (no scheme, no port)")
    return host


def alb_region(arns: tuple[str, ...]) -> tuple[str, str]:
    """The ``(partition, region)`` all the configured ALB ARNs share (one region: the key URL names it)."""
    places = {m.group(1, 2) for m in (_ALB_ARN.fullmatch(arn) for arn in arns) if m}
    if len(places) != 1:
        raise _fail("aws_alb_arns", "all load balancer ARNs must be in one region (its key endpoint is regional)")
    partition, region = places.pop()
    return partition, region


def alb_key_base_url(partition: str, region: str) -> str:
    """Where ALB publishes its keys (the kid is appended), from the AWS user-claims documentation."""
    if partition == "aws-us-gov":
        return f"https://s3-{region}.amazonaws.com/aws-elb-public-keys-prod-{region}"
    return f"https://public-keys.auth.elb.{region}.amazonaws.com"


def check_preset_settings(settings: Configured) -> dict[str, Any]:
    """Validate the preset-specific settings; return the normalised values for :class:`Settings` to keep.

    Called from ``Settings.__post_init__`` for every provider; the Cloudflare checks
    proper stay in :mod:`cfaccess_mw.settings`.
    """
    provider = settings.provider
    for name, providers in _ONLY_FOR.items():
        if getattr(settings, name) and provider not in providers:
            raise _fail(name, f"is not read with CFACCESS_PROVIDER={provider}; remove it")
    if provider is Provider.CLOUDFLARE:
        return {}
    preset = PRESETS[provider]
    where = f"with CFACCESS_PROVIDER={provider}"
    if settings.team_domain is not None:
        raise ConfigError("CFACCESS_TEAM_DOMAIN", f"is Cloudflare's; {where} set CFACCESS_ISSUER instead")
    if settings.service_tokens:
        raise ConfigError("CFACCESS_SERVICE_TOKENS", f"are Cloudflare Access service tokens; not read {where}")
    if settings.allow_cookie:
        raise ConfigError("CFACCESS_ALLOW_COOKIE", f"reads Cloudflare's CF_Authorization cookie; not {where}")
    for name in ("issuers", "algorithms", "audiences", "aws_alb_arns"):
        if isinstance(getattr(settings, name), (str, bytes)):
            raise _fail(name, f"{name} must be a tuple, not a single string")

    values: dict[str, Any] = {}
    algorithms = tuple(settings.algorithms) or preset.algorithms
    for alg in algorithms:
        if alg not in preset.allowed_algorithms:
            raise _fail(
                "algorithms", f"{alg!r} is not allowed {where}; choose from {', '.join(preset.allowed_algorithms)}"
            )
    if len(set(algorithms)) != len(algorithms):
        raise _fail("algorithms", "lists an algorithm twice")
    values["algorithms"] = algorithms

    issuers = tuple(settings.issuers)
    audiences = tuple(settings.audiences)
    if provider is Provider.GOOGLE_IAP:
        if issuers and issuers != (IAP_ISSUER,):
            raise _fail("issuers", f"Google IAP's issuer is always {IAP_ISSUER}; leave CFACCESS_ISSUER unset")
        issuers = (IAP_ISSUER,)
        if settings.certs_url is None:
            values["certs_url"] = preset.default_certs_url
        if not audiences:
            raise ConfigError(
                "CFACCESS_AUD",
                "required: the IAP audience, /projects/PROJECT_NUMBER/apps/PROJECT_ID or "
                "/projects/PROJECT_NUMBER/global/backendServices/SERVICE_ID (the console's Signed Header JWT Audience)",
            )
        for aud in audiences:
            if not isinstance(aud, str) or not _IAP_AUDIENCE.fullmatch(aud):
                raise ConfigError("CFACCESS_AUD", f"{aud!r} is not an IAP audience (/projects/PROJECT_NUMBER/...)")
    elif provider is Provider.POMERIUM:
        if not issuers:
            raise _fail(
                "issuers",
                "required: the route host Pomerium puts in 'iss' (app.example.com, or "
                "https://app.example.com/ with jwt_issuer_format: uri)",
            )
        issuers = tuple(_pomerium_issuer(i) for i in issuers)
        if not audiences:
            raise ConfigError("CFACCESS_AUD", "required: the route host(s) Pomerium puts in 'aud' (app.example.com)")
        audiences = tuple(_route_host(a, "CFACCESS_AUD") for a in audiences)
        if settings.certs_url is None:
            host = urlsplit(issuers[0]).hostname if "://" in issuers[0] else issuers[0]
            values["certs_url"] = f"https://{host}/.well-known/pomerium/jwks.json"
    elif provider is Provider.AWS_ALB:
        if len(issuers) != 1:
            raise _fail(
                "issuers",
                "required: exactly one, the 'iss' of your IdP (for Cognito "
                "https://cognito-idp.REGION.amazonaws.com/USER_POOL_ID)",
            )
        if audiences:
            raise ConfigError("CFACCESS_AUD", f"ALB tokens carry no 'aud'; {where} set CFACCESS_AWS_CLIENT_ID instead")
        arns = tuple(a.strip() for a in settings.aws_alb_arns)
        if not arns:
            raise _fail("aws_alb_arns", "required: the ARN of the load balancer that signs the tokens")
        for arn in arns:
            if not _ALB_ARN.fullmatch(arn):
                raise _fail(
                    "aws_alb_arns",
                    f"{arn!r} is not an application load balancer ARN "
                    "(arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID)",
                )
        if len(set(arns)) != len(arns):
            raise _fail("aws_alb_arns", "lists the same ARN twice")
        values["aws_alb_arns"] = arns
        partition, region = alb_region(arns)
        client_id = settings.aws_client_id
        if not isinstance(client_id, str) or not _PRINTABLE.fullmatch(client_id.strip()):
            raise _fail("aws_client_id", "required: the client ID of the ALB's authenticate action (no spaces)")
        values["aws_client_id"] = client_id.strip()
        if settings.certs_url is None:
            values["certs_url"] = alb_key_base_url(partition, region)
    else:  # OIDC
        if len(issuers) != 1:
            raise _fail("issuers", "required: exactly one, the IdP's issuer URL exactly as in its ID tokens")
        if not audiences:
            raise ConfigError("CFACCESS_AUD", "required: the client ID the ID tokens are issued to (their 'aud')")
        for aud in audiences:
            if not isinstance(aud, str) or not _PRINTABLE.fullmatch(aud):
                raise ConfigError("CFACCESS_AUD", f"{aud!r} is not a client ID (printable, no spaces)")
        header = (settings.token_header or "authorization").strip().lower()
        if not _HEADER_NAME.fullmatch(header) or header in _RESERVED_HEADERS:
            raise _fail("token_header", f"{settings.token_header!r} is not a header that can carry the token")
        values["token_header"] = header
    if provider in (Provider.AWS_ALB, Provider.OIDC):
        issuers = (_https_or_loopback(issuers[0].strip(), "CFACCESS_ISSUER"),)
    if len(set(audiences)) != len(audiences):
        raise ConfigError("CFACCESS_AUD", "lists the same audience twice")
    if len(set(issuers)) != len(issuers):
        raise _fail("issuers", "lists the same issuer twice")
    values["issuers"] = issuers
    values["audiences"] = audiences
    return values


def _pomerium_issuer(value: str) -> str:
    """``app.example.com`` (jwt_issuer_format hostOnly, the default) or ``https://app.example.com/`` (uri)."""
    value = value.strip()
    if "://" not in value:
        return _route_host(value, "CFACCESS_ISSUER")
    parts = _url_parts(value, "CFACCESS_ISSUER")
    if (
        parts.scheme != "https"
        or parts.path != "/"
        or parts.query
        or parts.fragment
        or parts.port is not None
        or parts.username is not None
        or parts.password is not None
    ):
        raise _fail("issuers", f"{value!r}: Pomerium's uri issuer form is https://HOST/ exactly")
    return f"https://{_route_host(parts.hostname or '', 'CFACCESS_ISSUER')}/"


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


# --- for the CLI (check and explain) -------------------------------------------------------------


def decode_unverified_for(provider: Provider, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload, shape-checked only, with the preset's encoding (ALB's padding). Trust nothing in them."""
    preset = PRESETS[provider]
    decode = b64url_decode_padded if preset.padded_base64 else b64url_decode
    header_b64, payload_b64, _ = split_token(token)
    header = _json_object(decode(header_b64, "header"), "header")
    payload = _json_object(decode(payload_b64, "payload"), "payload")
    for name in preset.header_claims:  # shown where the verifier reads them (ALB's iss and exp)
        if name in header:
            payload.setdefault(name, header[name])
    return header, payload


def describe_preset(settings: Configured) -> list[tuple[str, str]]:
    """The rows ``cfaccess-mw check`` prints for a non-Cloudflare preset."""
    preset = PRESETS[settings.provider]
    rows = [
        ("provider", f"{settings.provider} ({preset.label})"),
        ("token header", token_header(settings)),
        ("algorithms", ", ".join(settings.algorithms) + " (pinned; the token's alg must be one of these)"),
        ("issuer", " or ".join(settings.issuers)),
    ]
    if settings.provider is Provider.AWS_ALB:
        rows.append((f"ALB ARNs ({len(settings.aws_alb_arns)})", ", ".join(settings.aws_alb_arns)))
        rows.append(("client ID", str(settings.aws_client_id)))
        rows.append(("key endpoint", f"{settings.certs_url}/<kid> (kid must be a UUID)"))
    else:
        rows.append((f"audiences ({len(settings.audiences)})", ", ".join(settings.audiences)))
        rows.append(("keys", settings.certs_url or f"from the discovery document of {settings.issuers[0]}"))
    required = ", ".join(preset.required_claims)
    lifetime = f"; lifetime at most {human_duration(preset.max_lifetime)} + 2x leeway" if preset.max_lifetime else ""
    rows.append(("required claims", f"{required}{lifetime}; the user is named by '{preset.identity_claim}'"))
    if settings.provider is Provider.OIDC and token_header(settings) == "authorization":
        rows.append(("Authorization", "Bearer with a '.' is an ID token, without one an API key (never both)"))
    return rows


def preset_hint(reason: Reason, settings: Configured, claims: Mapping[str, Any]) -> str:
    """What a deployer can do about a refusal under a non-Cloudflare preset."""
    preset = PRESETS[settings.provider]
    if reason is Reason.AUDIENCE_MISMATCH:
        if settings.provider is Provider.AWS_ALB:
            return (
                "CFACCESS_AWS_ALB_ARN must list the load balancer (the header's 'signer') and "
                "CFACCESS_AWS_CLIENT_ID its client ID"
            )
        return f"CFACCESS_AUD must list this token's audience (it says {claims.get('aud')!r})"
    if reason is Reason.ISSUER_MISMATCH:
        return f"the token says iss {claims.get('iss')!r}; CFACCESS_ISSUER must be exactly that if you trust it"
    if reason is Reason.UNKNOWN_KEY:
        source = settings.certs_url or "the discovery document"
        return f"the key source ({source}) publishes no usable key for this kid (another proxy's token?)"
    if reason is Reason.BAD_SIGNATURE:
        return f"the key is known but the signature does not match: the token was altered or not made by {preset.label}"
    if reason is Reason.ALGORITHM_NOT_ALLOWED:
        return (
            f"{preset.label} tokens here must use {', '.join(settings.algorithms)} (CFACCESS_ALGORITHMS where allowed)"
        )
    if reason is Reason.TOKEN_EXPIRED:
        return (
            f"get a fresh token; if fresh ones fail too, check this host's clock (leeway {settings.leeway_seconds:g} s)"
        )
    if reason is Reason.TOKEN_NOT_YET_VALID:
        return "this host's clock is behind the issuer's: synchronise it (NTP)"
    if reason is Reason.KEYS_UNAVAILABLE:
        return f"check that this host can reach {settings.certs_url or discovery_hint(settings)}"
    return f"this is not a token {preset.label} would send; copy the {token_header(settings)} header as received"


def discovery_hint(settings: Configured) -> str:
    return settings.issuers[0].rstrip("/") + "/.well-known/openid-configuration"
