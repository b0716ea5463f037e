"""``cfaccess-mw check``: read the ``CFACCESS_*`` variables as the middleware does, fetch the signing keys, and
print the policy that results, with advice where the configuration is weaker than it could be."""

from __future__ import annotations

import argparse

from ..core.providers import PRESETS, Provider
from ..core.settings import ExposureMode, Settings
from ..keys.sources import KeyStore, build_key_source
from .output import (
    EXIT_OK,
    PROG,
    CliError,
    _keys_row,
    _out,
    _row,
    _seconds,
)
from .presets import describe_preset


def _print_policy(settings: Settings) -> None:
    mode = settings.exposure_mode
    trust = (
        "a loopback peer is the local operator"
        if mode is ExposureMode.LOCAL
        else "loopback peers earn nothing (cloudflared or a proxy on this host)"
    )
    _out("Effective policy (from CFACCESS_* variables):")
    _row("exposure mode", f"{mode.value}: {trust}")
    if settings.provider is not Provider.CLOUDFLARE:
        for label, value in describe_preset(settings):
            _row(label, value)
    elif settings.jwt_enabled:
        _row("team domain", str(settings.team_domain))
        _row("issuer", str(settings.issuer))
        _row(f"audiences ({len(settings.audiences)})", ", ".join(settings.audiences))
        _row("certs URL", str(settings.certs_url))
    else:
        _row("Access tokens", "not read: CFACCESS_TEAM_DOMAIN and CFACCESS_AUD are not set")
    _row("public paths", ", ".join(settings.public_paths) or "none")
    _row(f"API keys ({len(settings.api_keys)})", ", ".join(k.name for k in settings.api_keys) or "none")
    tokens = ", ".join(f"{t.name} (client ID {t.client_id})" for t in settings.service_tokens)
    _row(f"service tokens ({len(settings.service_tokens)})", tokens or "none")
    if settings.jwt_enabled:
        _row("leeway", f"{_seconds(settings.leeway_seconds)} on exp, nbf and iat")
        _row(
            "keys cache TTL",
            f"{_seconds(settings.jwks_cache_seconds)} (refetch for an unknown key id at most every "
            f"{_seconds(settings.jwks_refresh_cooldown_seconds)}; fetch timeout "
            f"{_seconds(settings.jwks_timeout_seconds)})",
        )
        _row(
            "keys max age",
            f"{_seconds(settings.jwks_max_age_seconds)} (keys no fetch confirms are trusted this long through a "
            "certs outage, then every token gets 503)",
        )
        _row("token cache", f"{settings.token_cache_size} verified tokens")
        _row("CF_Authorization", "read when the header is absent" if settings.allow_cookie else "cookie not read")


def _advice(settings: Settings) -> list[str]:
    """Things that are valid but are often a mistake."""
    notes = []
    if settings.exposure_mode is ExposureMode.LOCAL:
        notes.append(
            "local mode trusts every loopback peer. If cloudflared or a reverse proxy runs on this host, every "
            "request from the internet arrives from loopback: set CFACCESS_EXPOSURE_MODE=reverse-proxy"
        )
    if settings.exposure_mode is ExposureMode.REVERSE_PROXY and not settings.api_keys:
        notes.append(
            f"no API keys: only {PRESETS[settings.provider].label} tokens get in, scripts on this host included "
            f"(make a key with: {PROG} new-api-key NAME)"
        )
    return notes


async def _fetch_keys(settings: Settings) -> KeyStore:
    source = build_key_source(settings)
    if not await source.refresh():
        raise CliError(
            f"cannot fetch the signing keys from {source.url}: {source.last_failure} (a running app keeps the keys "
            f"it has for at most {_seconds(settings.jwks_max_age_seconds)}, CFACCESS_JWKS_MAX_AGE_SECONDS, then "
            "answers every token 503)"
        )
    return source


async def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and the certs endpoint; print the effective policy."""
    settings = Settings.from_env(strict=True if args.strict else None)
    _print_policy(settings)
    if settings.jwt_enabled:
        jwks = await _fetch_keys(settings)
        if settings.provider is Provider.AWS_ALB:
            _row("signing keys", f"fetched one per kid from {jwks.url}/<kid> when a token first names it")
        else:
            _keys_row(jwks.kids, jwks.url)
    for note in _advice(settings):
        _out(f"note: {note}")
    if settings.provider is Provider.AWS_ALB:
        _out("OK: configuration is valid (ALB keys are fetched per kid; explain a real token to test the endpoint).")
    elif settings.jwt_enabled:
        _out("OK: configuration is valid and the certs endpoint serves usable keys.")
    else:
        _out("OK: configuration is valid (API keys and, in local mode, loopback only; no Access tokens).")
    return EXIT_OK
