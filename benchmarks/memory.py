"""Section 6: peak RSS after N distinct valid tokens, in a child process of its own.

    python -m benchmarks.memory TOKENS CACHE_SIZE   -> one JSON line

Honest shortcut, stated in the README: signing a million RSA-2048 tokens takes about 20 minutes
here (about 1.2 ms each), so these tokens carry a fixed dummy signature and the middleware's key
source hands out a key object whose ``verify`` accepts anything. Everything else is the real
path: the real middleware and verifier, strict base64url, JSON, claim checks, the principal, the
bare Starlette app behind it, and the verified-token cache with its eviction. The RSA check
allocates nothing that outlives a request, so leaving it out changes the time, not the memory.
Each token is built just before it is sent and dropped after, so the only thing that can hold
memory across requests is the middleware itself.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import resource
import sys
import time
from collections.abc import MutableMapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from cfaccess_mw.testing import LocalIssuer

from . import apps
from .common import USERS, b64url, jwt_scope, make_receive

_SIGNATURE = b64url(bytes(256))


class _AcceptingKey:
    def verify(self, *args: object) -> None:
        return None


# The verifier refuses a key that is not RSA (a key source shared with an ES256 preset): this stand-in is one.
RSAPublicKey.register(_AcceptingKey)


_KEY = _AcceptingKey()


class _AcceptingKeys:
    async def get_key(self, kid: str) -> Any:
        return _KEY

    def cached_key(self, kid: str) -> Any:
        return _KEY


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Restart the kernel's peak-RSS counter (Linux 4.0+), so the peak covers only the traffic."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _current_kb() -> int:
    return _status_kb("VmRSS") or _peak_kb()


def _peak_kb() -> int:
    """Peak RSS since :func:`_reset_peak` (VmHWM), else since the process started (ru_maxrss, KiB on Linux)."""
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def measure(tokens: int, cache_size: int) -> dict[str, Any]:
    logging.getLogger("cfaccess_mw.audit").setLevel(logging.CRITICAL)
    with LocalIssuer() as issuer:
        team = apps.Team(issuer.team_domain, issuer.audience, issuer.certs_url)
        mw = apps.ours(apps.bare_starlette(), team, token_cache_size=cache_size)
    assert mw.verifier is not None
    mw.verifier.keys = _AcceptingKeys()  # the one substitution; see the module docstring
    header = b64url(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
    now = int(time.time())
    template = json.dumps(
        {
            "aud": [team.audience],
            "email": USERS[0],
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "iss": team.issuer,
            "type": "app",
            "identity_nonce": "%012d",
            "sub": "%032d",
            "country": "US",
        },
        separators=(",", ":"),
    )
    statuses = {200: 0}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    async def one(i: int) -> None:
        payload = b64url((template % (i, i)).encode())
        await mw(jwt_scope(f"{header}.{payload}.{_SIGNATURE}"), make_receive(), send)

    for i in range(1000):  # warm-up: imports, first allocations
        await one(-1 - i)
    gc.collect()
    baseline = _current_kb()
    peak_reset = _reset_peak()
    started = time.perf_counter()
    for i in range(tokens):
        await one(i)
    elapsed = time.perf_counter() - started
    gc.collect()
    return {
        "tokens": tokens,
        "cache_size": cache_size,
        "cached": mw.verifier.cached_tokens,
        "baseline_kb": baseline,
        "peak_kb": _peak_kb(),
        "seconds": elapsed,
        "statuses": statuses,
        "peak_since": "start of the traffic" if peak_reset else "process start",
    }


def main(argv: list[str]) -> None:
    print(json.dumps(asyncio.run(measure(int(argv[0]), int(argv[1])))))


if __name__ == "__main__":
    main(sys.argv[1:])
