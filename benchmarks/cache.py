"""Section 7: the verified-token cache under a burst of one-off tokens (issue 11 part 3).

Active browser sessions, each re-sending its token, interleaved with a flood of one-off tokens (a
crawler, a fleet of CI jobs minting service tokens) far larger than the cache. What counts is the
sessions' hit rate: a miss costs an RSA verification. As in section 6, the tokens carry a dummy
signature and the key accepts anything (signing tens of thousands of tokens would take a minute);
the key counts how often it is asked, which is what a miss costs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .common import b64url, run_sync

_SIGNATURE = b64url(bytes(256))
_ISSUER = "https://bench-team.cloudflareaccess.com"
_AUDIENCE = "b" * 64


class CountingKey:
    """Accepts any signature and counts the verifications (each one an RSA operation on the real path)."""

    def __init__(self) -> None:
        self.verifications = 0

    def verify(self, *args: object) -> None:
        self.verifications += 1


# The verifier refuses a key that is not RSA (a key source shared with an ES256 preset): this stand-in is one.
RSAPublicKey.register(CountingKey)


class CountingKeys:
    """A key source with one key; answers both the current protocol and the one before issue 10."""

    def __init__(self) -> None:
        self.key = CountingKey()

    async def get_key(self, kid: str) -> Any:
        return self.key

    def cached_key(self, kid: str) -> Any:
        return self.key

    def has_kid(self, kid: str) -> bool:
        return True


def _tokens(prefix: str, count: int) -> list[str]:
    header = b64url(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
    now = int(time.time())
    return [
        f"{header}."
        + b64url(
            json.dumps(
                {
                    "aud": [_AUDIENCE],
                    "email": f"{prefix}{i}@example.com",
                    "exp": now + 3600,
                    "iat": now,
                    "nbf": now,
                    "iss": _ISSUER,
                    "type": "app",
                    "sub": f"{prefix}{i}",
                },
                separators=(",", ":"),
            ).encode()
        )
        + f".{_SIGNATURE}"
        for i in range(count)
    ]


def burst(
    verifier_class: Any, *, cache_size: int = 4096, sessions: int = 250, one_off_between: int = 8, visits: int = 10
) -> dict[str, Any]:
    """``sessions`` tokens each sent ``visits`` times, round robin, with ``one_off_between`` one-off tokens before
    every session request; returns the sessions' hit rate and the counts behind it."""
    keys = CountingKeys()
    verifier = verifier_class(issuer=_ISSUER, audiences=(_AUDIENCE,), keys=keys, cache_size=cache_size)
    session_tokens = _tokens("session", sessions)
    one_off = iter(_tokens("oneoff", sessions * visits * one_off_between))
    session_requests = session_misses = 0
    for _ in range(visits):
        for token in session_tokens:
            for _ in range(one_off_between):
                run_sync(verifier.verify(next(one_off)))
            before = keys.key.verifications
            run_sync(verifier.verify(token))
            session_requests += 1
            session_misses += keys.key.verifications - before
    first_visits = sessions  # a session's first request is a miss under any policy
    return {
        "cache_size": cache_size,
        "sessions": sessions,
        "one_off_tokens": sessions * visits * one_off_between,
        "session_requests": session_requests,
        "session_misses": session_misses,
        "hit_rate_after_first_visit": 1 - (session_misses - first_visits) / (session_requests - first_visits),
    }
