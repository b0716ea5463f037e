"""What ``check`` and ``explain`` say about a preset: its settings in words, a token decoded as that proxy sends
it, and a hint at the usual cause of each refusal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.errors import Reason
from ..core.providers import PRESETS, Configured, Provider, b64url_decode_padded, token_header
from ..core.tokens import (
    _json_object,
    b64url_decode,
    human_duration,
    split_token,
)


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
