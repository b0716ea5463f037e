"""Coverage-guided fuzzing of token verification with atheris (libFuzzer for Python).

    fuzz/run.sh            # ~20 s, what CI runs when atheris installs
    fuzz/run.sh 3600       # an hour; a crashing input is written to fuzz/artifacts/crash-<sha1>
    PYTHONPATH=. python fuzz/fuzz_tokens.py fuzz/artifacts/crash-<sha1>   # replay one input

fuzz/seeds/ holds the starting corpus (a signed claims set, an alg-none token, and
the signed ``exp`` of 10**400 that was a 500 before the fix), copied to a temporary
directory for each run.

The entry point is the whole of ``TokenVerifier.verify``: size and shape checks,
strict base64url, the header rules, key lookup, the RS256 signature and the
claims checks. The first input byte picks what the rest is:

* even: the token text itself (latin-1), as an attacker would send it;
* odd: a *payload*, signed with the real key the verifier trusts, so the fuzzer
  also reaches the claims parsing and checks that only signed tokens get to
  (the 10**400 ``exp`` crash that issue 5 found lives there).

Key lookup is an in-memory key source, so each input needs no event loop: the
coroutine is stepped once by hand and must finish without awaiting anything.
The only exception a token may cause is :class:`InvalidToken`; anything else is
a crash, which is a bug (it would be a 500 in the middleware).
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys

import atheris
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256

from cfaccess_mw.errors import InvalidToken, Reason
from cfaccess_mw.tokens import TokenVerifier

KID = "fuzz-key"
ISSUER = "https://fuzz-team.cloudflareaccess.com"
AUDIENCE = "a" * 64
NOW = 1_700_000_000.0
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC = PRIVATE.public_key()
HEADER = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": KID}).encode()).rstrip(b"=").decode()


class MemoryKeys:
    async def get_key(self, kid: str) -> rsa.RSAPublicKey:
        if kid != KID:
            raise InvalidToken(Reason.UNKNOWN_KEY, "unknown key")
        return PUBLIC

    def cached_key(self, kid: str) -> rsa.RSAPublicKey | None:
        return PUBLIC if kid == KID else None


VERIFIER = TokenVerifier(issuer=ISSUER, audiences=(AUDIENCE,), keys=MemoryKeys(), cache_size=0, clock=lambda: NOW)


def signed(payload: bytes) -> str:
    segment = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    signing_input = f"{HEADER}.{segment}"
    signature = PRIVATE.sign(signing_input.encode(), PKCS1v15(), SHA256())
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def verify_now(token: str) -> None:
    step = VERIFIER.verify(token)
    try:
        step.send(None)
    except StopIteration:
        return
    finally:
        step.close()
    raise AssertionError("verification awaited something with an in-memory key source")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    token = signed(data[1:]) if data[0] & 1 else data[1:].decode("latin-1")
    with contextlib.suppress(InvalidToken):
        verify_now(token)


def main() -> None:
    atheris.instrument_all()  # coverage feedback for everything loaded (instrument_imports saw too little)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
