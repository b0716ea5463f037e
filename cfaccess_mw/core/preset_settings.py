"""The presets' own settings: ``CFACCESS_PROVIDER`` and the variables only some presets read, parsed and checked
once, when :class:`~cfaccess_mw.core.settings.Settings` is built (a wrong or misplaced one is a ``ConfigError``
naming it). What each preset then requires of a token is in :mod:`cfaccess_mw.core.providers`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

from .errors import ConfigError
from .exposure import is_loopback_url_host
from .providers import IAP_ISSUER, PRESETS, Configured, Provider

_HOST = re.compile(r"(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*")


_IAP_AUDIENCE = re.compile(r"/projects/[0-9]{1,20}/[A-Za-z0-9._~/-]{1,400}")


_PRINTABLE = re.compile(r"[!-~]{1,512}")


_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,64}")  # an RFC 9110 token, lower-cased


#: arn:PARTITION:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID
_ALB_ARN = re.compile(
    r"arn:(aws|aws-us-gov):elasticloadbalancing:([a-z]{2}(?:-gov)?-[a-z]+-[0-9]):([0-9]{12}):"
    r"loadbalancer/app/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}"
)


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
