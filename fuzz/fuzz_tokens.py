"""Coverage-guided fuzzing of token verification with atheris (libFuzzer for Python).

    fuzz/run.sh            # ~20 s, what CI runs when atheris installs
    fuzz/run.sh 3600       # an hour; a crashing input is written to fuzz/artifacts/crash-<sha1>
    PYTHONPATH=. python fuzz/fuzz_tokens.py fuzz/artifacts/crash-<sha1>   # replay one input

fuzz/seeds/ holds the starting corpus (a signed claims set, an alg-none token, and
the signed ``exp`` of 10**400 that was a 500 before the fix), copied to a temporary
directory for each run.

The entry point is the whole of ``TokenVerifier.verify``: size and shape checks,
strict base64url, the header rules, key lookup, the signature and the claims
checks, for Cloudflare and for every provider preset (issue 14). The first input
byte picks what the rest is:

* bit 0 even: the token text itself (latin-1), as an attacker would send it;
* bit 0 odd: a *payload*, signed with the real key the verifier trusts, in that
  preset's header shape (ALB's padded encoding included), so the fuzzer also
  reaches the claims parsing and checks that only signed tokens get to (the
  10**400 ``exp`` crash that issue 5 found lives there);
* bits 1-3: which verifier, ``PRESETS[(byte >> 1) % 5]``: Cloudflare (RS256),
  google-iap, pomerium, aws-alb (ES256), oidc (RS256 and ES256 allowed).

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

from cfaccess_mw.core.errors import InvalidToken, Reason
from cfaccess_mw.core.profiles import PresetProfile
from cfaccess_mw.core.providers import PRESETS, Provider
from cfaccess_mw.core.verifier import TokenVerifier
from cfaccess_mw.testing.presets import jws, new_ec_key

KID = "fuzz-key"
ISSUER = "https://fuzz-team.cloudflareaccess.com"
AUDIENCE = "a" * 64
NOW = 1_700_000_000.0
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC = PRIVATE.public_key()
HEADER = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": KID}).encode()).rstrip(b"=").decode()


class MemoryKeys:
    async def get_key(self, kid: str) -> rsa.RSAPublicKey:
        return self.get_key_sync(kid)

    def get_key_sync(self, kid: str) -> rsa.RSAPublicKey:
        if kid != KID:
            raise InvalidToken(Reason.UNKNOWN_KEY, "unknown key")
        return PUBLIC

    def cached_key(self, kid: str) -> rsa.RSAPublicKey | None:
        return PUBLIC if kid == KID else None


VERIFIER = TokenVerifier(issuer=ISSUER, audiences=(AUDIENCE,), keys=MemoryKeys(), cache_size=0, clock=lambda: NOW)


EC_PRIVATE = new_ec_key()
ALB_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/fuzz/50dc6c495c0c9188"
ALB_KID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
#: provider -> (kid, private key, header) for the presets; every kid maps to its key in MemoryKeys below.
SIGNERS: dict[Provider, tuple[str, object, dict[str, object]]] = {
    Provider.GOOGLE_IAP: ("iap-key", EC_PRIVATE, {"alg": "ES256", "kid": "iap-key", "typ": "JWT"}),
    Provider.POMERIUM: ("pom-key", EC_PRIVATE, {"alg": "ES256", "kid": "pom-key"}),
    Provider.AWS_ALB: (
        ALB_KID,
        EC_PRIVATE,
        {"alg": "ES256", "kid": ALB_KID, "signer": ALB_ARN, "client": "fuzz-client", "iss": ISSUER, "exp": 0},
    ),
    Provider.OIDC: ("oidc-key", PRIVATE, {"alg": "RS256", "kid": "oidc-key"}),
}


class PresetKeys:
    async def get_key(self, kid: str) -> object:
        return self.get_key_sync(kid)

    def get_key_sync(self, kid: str) -> object:
        if kid in ("iap-key", "pom-key", ALB_KID):
            return EC_PRIVATE.public_key()
        if kid == "oidc-key":
            return PRIVATE.public_key()
        raise InvalidToken(Reason.UNKNOWN_KEY, "unknown key")

    def cached_key(self, kid: str) -> object:
        return None  # every fresh token asks get_key, as an uncached kid would

    def has_kid(self, kid: str) -> bool:
        return kid in ("iap-key", "pom-key", ALB_KID, "oidc-key")


def _profile(provider: Provider) -> PresetProfile:
    issuers = {Provider.GOOGLE_IAP: ("https://cloud.google.com/iap",), Provider.POMERIUM: ("app.example.com",)}
    audiences = {Provider.GOOGLE_IAP: ("/projects/1/apps/fuzz",), Provider.POMERIUM: ("app.example.com",)}
    return PresetProfile(
        PRESETS[provider],
        issuers=issuers.get(provider, (ISSUER,)),
        audiences=() if provider is Provider.AWS_ALB else audiences.get(provider, (AUDIENCE,)),
        algorithms=("RS256", "ES256") if provider is Provider.OIDC else ("ES256",),
        leeway=30.0,
        alb_arns=(ALB_ARN,),
        alb_client_id="fuzz-client",
    )


VERIFIERS = [VERIFIER] + [
    TokenVerifier(
        issuer=ISSUER, audiences=(AUDIENCE,), keys=PresetKeys(), cache_size=0, clock=lambda: NOW, profile=_profile(p)
    )  # type: ignore[arg-type]
    for p in SIGNERS
]


def signed_for(index: int, payload: bytes) -> str:
    if index == 0:
        return signed(payload)
    _, key, header = SIGNERS[list(SIGNERS)[index - 1]]
    return jws(key, header, payload, padded=header.get("signer") is not None)  # type: ignore[arg-type]


def signed(payload: bytes) -> str:
    segment = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    signing_input = f"{HEADER}.{segment}"
    signature = PRIVATE.sign(signing_input.encode(), PKCS1v15(), SHA256())
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def verify_now(token: str, verifier: TokenVerifier = VERIFIER) -> None:
    verifier.verify_token_sync(token)  # the decision the async path makes too, with an in-memory key source


def test_one_input(data: bytes) -> None:
    if not data:
        return
    index = (data[0] >> 1) % len(VERIFIERS)
    token = signed_for(index, data[1:]) if data[0] & 1 else data[1:].decode("latin-1")
    with contextlib.suppress(InvalidToken):
        verify_now(token, VERIFIERS[index])


def main() -> None:
    atheris.instrument_all()  # coverage feedback for everything loaded (instrument_imports saw too little)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
