"""Each preset's rules for a fresh token: header, signature, claims (Cloudflare's as much as any other's).

:class:`~cfaccess_mw.tokens.TokenVerifier` keeps the token cache; a :class:`PresetProfile`
does everything the cache does not, for exactly one preset, configured from settings
and never from the token: the algorithms it pins, the issuer(s) and audiences it
requires, the claims it requires and where its proxy signs them (ALB's header), the
lifetime it allows. Cloudflare is one preset among the others here, so a rule is
written once for all of them.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .ec import verify_signature
from .errors import InvalidToken, Reason
from .jwk import PublicKey
from .providers import ALB_KID, PRESETS, Preset, Provider, b64url_decode_padded
from .tokens import (
    HEADER_CACHE_SIZE,
    Signed,
    VerifiedToken,
    _json_object,
    _malformed,
    _number,
    b64url_decode,
    human_duration,
    read_only_claims,
    split_token,
)

if TYPE_CHECKING:
    from .settings import Settings


class PresetProfile:
    """One preset's rules for a fresh token, from configuration; plugged into ``TokenVerifier(profile=...)``.

    The verifier keeps the token cache (a repeated token costs a dict hit); this does
    the rest: header, signature, claims.
    """

    def __init__(
        self,
        preset: Preset,
        *,
        issuers: tuple[str, ...],
        audiences: tuple[str, ...],
        algorithms: tuple[str, ...],
        leeway: float,
        alb_arns: tuple[str, ...] = (),
        alb_client_id: str | None = None,
    ) -> None:
        self.preset = preset
        self.issuers = issuers
        self.audiences = audiences
        self.algorithms = algorithms
        self.leeway = leeway
        self.alb_arns = alb_arns
        self.alb_client_id = alb_client_id
        self._decode: Callable[[str, str], bytes] = b64url_decode_padded if preset.padded_base64 else b64url_decode
        #: header segment -> (alg, kid, the header's copies of the preset's header_claims)
        self._headers: OrderedDict[str, tuple[str, str, Mapping[str, Any]]] = OrderedDict()

    def __repr__(self) -> str:
        return f"PresetProfile({self.preset.provider.value!r}, issuers={list(self.issuers)!r})"

    def check(self, token: str, now: float) -> Signed:
        """Size and shape, then the header (cached by its segment): what is left needs the key."""
        header_b64, payload_b64, signature_b64 = split_token(token)
        checked = self._headers.get(header_b64)
        if checked is None:
            header = _json_object(self._decode(header_b64, "header"), "header")
            alg, kid = self.check_header(header)
            signed = {name: header[name] for name in self.preset.header_claims if name in header}
            checked = (alg, kid, signed)
            if len(self._headers) >= HEADER_CACHE_SIZE:
                with contextlib.suppress(KeyError):  # another thread emptied it meanwhile (WSGI threads share this)
                    self._headers.popitem(last=False)
            self._headers[header_b64] = checked
        alg, kid, from_header = checked
        signature = self._decode(signature_b64, "signature")
        return Signed(token, alg, kid, header_b64, payload_b64, signature, now, from_header)

    def finish(self, signed: Signed, key: PublicKey) -> VerifiedToken:
        """The signature, then (only then) the payload and its claims."""
        kid = signed.kid
        verify_signature(signed.alg, key, signed.signature, signed.signing_input(), kid)
        claims = _json_object(self._decode(signed.payload, "payload"), "payload")
        if signed.header_claims:
            merge_header_claims(claims, signed.header_claims)
        exp = self.check_claims(claims, signed.now)
        return VerifiedToken(read_only_claims(claims), kid, exp, key)

    def check_header(self, header: Mapping[str, Any]) -> tuple[str, str]:
        """``(alg, kid)`` after the header rules: a pinned algorithm, a usable kid, and ALB's signer and client."""
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken(
                Reason.ALGORITHM_NOT_ALLOWED,
                "The token's signing algorithm is not allowed.",
                f"alg {alg!r} is not one of {', '.join(self.algorithms)} ({self.preset.label})",
            )
        if "crit" in header or "b64" in header:
            raise _malformed("the header has a 'crit' or 'b64' parameter; no JWS extensions are supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise InvalidToken(
                Reason.UNKNOWN_KEY, "The token does not name a known signing key.", "the header has no usable 'kid'"
            )
        if self.preset.provider is Provider.AWS_ALB:
            if not ALB_KID.fullmatch(kid):
                # The kid becomes part of the key URL: only a UUID may, so no path or query can be smuggled in.
                raise InvalidToken(
                    Reason.UNKNOWN_KEY,
                    "The token does not name a known signing key.",
                    f"an ALB kid is a UUID; {kid[:64]!r} is not",
                )
            signer = header.get("signer")
            if signer not in self.alb_arns:
                raise InvalidToken(
                    Reason.AUDIENCE_MISMATCH,
                    "The token was signed by a different load balancer.",
                    f"signer {signer!r} is not in CFACCESS_AWS_ALB_ARN",
                )
            client = header.get("client")
            if client != self.alb_client_id:
                raise InvalidToken(
                    Reason.AUDIENCE_MISMATCH,
                    "The token is for a different application (client mismatch).",
                    f"client {client!r} is not CFACCESS_AWS_CLIENT_ID {self.alb_client_id!r}",
                )
        return alg, kid

    def check_claims(self, claims: Mapping[str, Any], now: float) -> float:
        """Validate ``iss``, ``aud`` (where the proxy sets one), ``sub``, ``jti``, the times and ``email_verified``;
        return ``exp``. Written for the common case to take few steps: every token that passes runs all of it."""
        preset = self.preset
        iss = claims.get("iss")
        if iss not in self.issuers:
            hint = ""
            if isinstance(iss, str):
                if any(iss.rstrip("/") == i.rstrip("/") for i in self.issuers):
                    hint = " (trailing slash)"
                elif any(iss.lower() == i.lower() for i in self.issuers):
                    hint = " (differs in letter case)"
            raise InvalidToken(
                Reason.ISSUER_MISMATCH,
                preset.issuer_message or f"The token was issued by a different {preset.label} issuer.",
                f"issuer {iss!r} is not {' or '.join(map(repr, self.issuers))}{hint}",
            )
        if preset.checks_audience:
            aud = claims.get("aud")
            token_auds = [aud] if type(aud) is str else aud
            if (
                type(token_auds) is not list
                or not token_auds
                or (
                    type(token_auds[0]) is not str  # one audience, the common case: no generator
                    if len(token_auds) == 1
                    else any(type(a) is not str for a in token_auds)
                )
            ):
                raise InvalidToken(
                    Reason.AUDIENCE_MISMATCH,
                    "The token's audience is missing or invalid.",
                    f"claim 'aud' must be a string or a list of strings, got {aud!r}",
                )
            for a in token_auds:
                if a in self.audiences:
                    break
            else:
                raise InvalidToken(
                    Reason.AUDIENCE_MISMATCH,
                    "The token is for a different application (audience mismatch).",
                    f"audience {token_auds!r} is not one of {list(self.audiences)!r}",
                )
        # RFC 7519 sections 4.1.2 and 4.1.7: strings when present (PyJWT refuses anything else too).
        if ("sub" in claims and type(claims["sub"]) is not str) or ("jti" in claims and type(claims["jti"]) is not str):
            name = "sub" if "sub" in claims and type(claims["sub"]) is not str else "jti"
            raise InvalidToken(
                Reason.CLAIM_INVALID,
                f"The token's '{name}' claim is invalid.",
                f"claim {name!r} must be a string, got {type(claims[name]).__name__}",
            )
        for name in preset.required_claims:
            if name not in claims:
                message = "The token has no expiry." if name == "exp" else f"The token has no '{name}'."
                raise InvalidToken(Reason.CLAIM_INVALID, message, f"claim {name!r} is required")
        exp = _number(claims, "exp")
        assert exp is not None  # required by every preset
        if now > exp + self.leeway:
            ago = human_duration(now - exp)
            raise InvalidToken(
                Reason.TOKEN_EXPIRED, f"The token expired {ago} ago.", f"expired {ago} ago (exp={int(exp)})"
            )
        latest = now + self.leeway
        for name in ("nbf", "iat"):
            if name in claims:
                value = _number(claims, name)
                if value is not None and value > latest:
                    ahead = human_duration(value - now)
                    raise InvalidToken(
                        Reason.TOKEN_NOT_YET_VALID,
                        "The token is not valid yet.",
                        f"claim {name!r} is {ahead} in the future (leeway {self.leeway:g}s; check the clock)",
                    )
        if preset.max_lifetime is not None:
            iat = _number(claims, "iat")
            assert iat is not None  # required by every preset with a maximum lifetime
            if exp - iat > preset.max_lifetime + 2 * self.leeway:
                raise InvalidToken(
                    Reason.CLAIM_INVALID,
                    "The token's lifetime is longer than its issuer allows.",
                    f"exp - iat is {human_duration(exp - iat)}; {preset.label} tokens live at most "
                    f"{human_duration(preset.max_lifetime)} plus twice the leeway",
                )
        if "email_verified" in claims:
            # OIDC: a boolean; ALB passes the IdP's userinfo, where Cognito writes the string "true".
            verified = claims["email_verified"]
            if verified is not True and verified != "true":
                raise InvalidToken(
                    Reason.CLAIM_INVALID,
                    "The token's email address is not verified.",
                    f"claim 'email_verified' is {verified!r}; an unverified email cannot name a user",
                )
        return exp


def merge_header_claims(claims: dict[str, Any], from_header: Mapping[str, Any]) -> None:
    """Put the claims a proxy signs in the JWT header (ALB's ``iss``, ``exp``) into the payload's claims.

    Both are signed, so both are the proxy's word; a value the payload lacks is taken
    from the header, and a value both carry must be the same (same JSON type and
    value), or the token contradicts itself and is refused. The claims are then
    checked as usual, so a header ``iss`` naming another issuer is refused like any.
    """
    for name, value in from_header.items():
        if name not in claims:
            claims[name] = value
        elif type(claims[name]) is not type(value) or claims[name] != value:
            reason = Reason.ISSUER_MISMATCH if name == "iss" else Reason.CLAIM_INVALID
            raise InvalidToken(
                reason,
                f"The token's '{name}' differs between its header and its payload.",
                f"header {name} {value!r} is not payload {name} {claims[name]!r}",
            )


def build_profile(settings: Settings) -> PresetProfile:
    """The profile for the configured preset (Cloudflare's included), from validated settings."""
    preset = PRESETS[settings.provider]
    return PresetProfile(
        preset,
        issuers=settings.issuers or (str(settings.issuer),),
        audiences=settings.audiences,
        algorithms=settings.algorithms or preset.algorithms,
        leeway=settings.leeway_seconds,
        alb_arns=settings.aws_alb_arns,
        alb_client_id=settings.aws_client_id,
    )


def cloudflare_profile(issuer: str, audiences: tuple[str, ...], leeway: float) -> PresetProfile:
    """Cloudflare Access's rules for one application: RS256, ``iss`` the team, ``aud`` one of its AUD tags."""
    preset = PRESETS[Provider.CLOUDFLARE]
    return PresetProfile(preset, issuers=(issuer,), audiences=audiences, algorithms=preset.algorithms, leeway=leeway)
