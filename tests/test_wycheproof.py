"""Project Wycheproof's vectors (C2SP/wycheproof) through this project's own code, in the quick suite.

The vectors live outside the repository (about 1 MB), in ``shared/vectors/wycheproof/`` beside the checkout (see
``shared/vectors/README.md`` for their provenance). They are found through ``CFACCESS_WYCHEPROOF_DIR``, else
``<checkout>/../shared/vectors/wycheproof``, else ``/work/shared/vectors/wycheproof``; when none exists the whole
module is skipped with a message saying so, never passed in silence.

Two paths:

* **The signature layer**, :func:`cfaccess_mw.ec.verify_signature` (the one every preset calls), with keys read by
  the project's own parsers (``parse_jwk``, ``parse_ec_jwk``): valid vectors verify, invalid ones are refused with
  ``bad_signature``, ``acceptable`` ones are pinned in :data:`ACCEPTABLE` (one reason per flag). The generation
  vectors are also signed with both test signers (:func:`cfaccess_mw.testing_presets.sign`, and PyJWT's, which
  ``LocalIssuer`` mints with): the same bytes.
* **The public path**, for the whole-token JOSE files: each group's key document served from a loopback key server,
  the real middleware in a real Starlette app, the token in the preset's header, the refusal read from the audit
  event. The Pomerium preset (ES256 and RS256 allowed) runs every vector; the Cloudflare preset (RS256 only, its
  own token code path and key parser) runs every vector of a group that holds an RSA key. As no payload here is
  a claim set a preset accepts, each vector is classified by *where* it was refused (:func:`stage`, the rule in
  one table) against what its verdict demands (:func:`expectation`).

Counts (``result``: valid / invalid / acceptable; then how many vectors run through each path):

=======================================  =====  =======  ==========  =================  ========  ==========
file                                     valid  invalid  acceptable  signature layer    pomerium  cloudflare
=======================================  =====  =======  ==========  =================  ========  ==========
ecdsa_secp256r1_sha256_p1363_test.json     173       89           0  262                       -           -
ecdsa_secp256r1_sha256_test.json (DER)     174      310           0  484 (all refused)         -           -
rsa_signature_2048_sha256_test.json          9      249           1  259                       -           -
rsa_pkcs1_2048_sig_gen_test.json             8        0           2  10, and 10 signed         -           -
json_web_signature_test.json                36      325           0  1 (tc259)               361         318
json_web_key_test.json                       1       11           0  11 (key parser)          12           6
json_web_crypto_test.json                    2       28           0  -                        30          14
rfc_examples.json                            4        0           0  2 (A.2, A.3)              4           2
=======================================  =====  =======  ==========  =================  ========  ==========

:data:`COUNTS` holds the first three columns and a test checks them against the files. The Cloudflare column is
the vectors of groups holding an RSA key. The 174 valid DER vectors are also verified as ``R || S``. In all 1774
tests, about 8 s on this machine.

What the public path shows. Every invalid vector is refused at or before the signature (by both presets):
bad_signature, algorithm_not_allowed, token_malformed (shape), key_unusable (``use``/``key_ops``, ROCA, wrong
curve or alg, point off the curve) or unknown_key. Of the 43 valid vectors under Pomerium, 13 get past the
signature and are refused for their payload, which is not a JSON object; 30 are refused before it by a
:data:`POLICY`: 22 under an algorithm no preset accepts (RS384, RS512, PS256/384/512, ES512), 6 with an empty
payload, 2 without a ``kid`` (RFC 7515 A.2/A.3). Under Cloudflare, of 36: 10 past the signature, 19, 6 and 1.
Where such a valid vector is RS256 or ES256 its signature is verified at the signature layer instead. No vector
can be accepted outright: the one JSON payload (RFC 7515 A.2/A.3) has no ``kid`` and no ``aud``, and its issuer
``joe`` is no Pomerium route host or Cloudflare team. No vector exposed a bug.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import RSAAlgorithm
from starlette.testclient import TestClient

from cfaccess_mw import AuditEvent, Settings
from cfaccess_mw.core.ec import P256_BYTES, parse_ec_jwk, verify_signature
from cfaccess_mw.core.errors import InvalidToken, Reason
from cfaccess_mw.core.providers import Provider, jwk_parser
from cfaccess_mw.core.settings import ExposureMode
from cfaccess_mw.keys.jwks import JWKSFetchError, PublicKey, parse_jwk, parse_jwks
from cfaccess_mw.testing import LoopbackKeyServer, Response
from cfaccess_mw.testing.presets import sign

from .conftest import LOCAL_BASE_URL, REMOTE_PEER, ROOT, build_app, error_of

# --- where the vectors are -----------------------------------------------------------------------

_ENV = "CFACCESS_WYCHEPROOF_DIR"


def _vectors_dir() -> tuple[Path | None, str]:
    """The vector directory, or ``None`` and the places looked in (``CFACCESS_WYCHEPROOF_DIR`` alone when set)."""
    given = os.environ.get(_ENV)
    candidates = (
        [Path(given)]
        if given
        else [ROOT.parent / "shared" / "vectors" / "wycheproof", Path("/work/shared/vectors/wycheproof")]
    )
    for candidate in candidates:
        if (candidate / "rsa_signature_2048_sha256_test.json").is_file():
            return candidate, ""
    return None, ", ".join(map(str, candidates))


VECTORS, _LOOKED_IN = _vectors_dir()
if VECTORS is None:
    pytest.skip(
        f"Wycheproof vectors not found (looked in {_LOOKED_IN}); put shared/vectors/wycheproof/ beside the checkout "
        f"or set {_ENV}",
        allow_module_level=True,
    )


@cache
def _load(name: str) -> dict[str, Any]:
    assert VECTORS is not None
    document: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return document


P1363 = "ecdsa_secp256r1_sha256_p1363_test.json"
DER = "ecdsa_secp256r1_sha256_test.json"
RSA = "rsa_signature_2048_sha256_test.json"
SIG_GEN = "rsa_pkcs1_2048_sig_gen_test.json"
JWS = "json_web_signature_test.json"
JWK = "json_web_key_test.json"
JWC = "json_web_crypto_test.json"
RFC = "rfc_examples.json"
#: The short name of each file in test ids (``p1363-tc4-ReplacedRByNR``).
SHORT = {P1363: "p1363", DER: "der", RSA: "rsa", SIG_GEN: "siggen", JWS: "jws", JWK: "jwk", JWC: "jwc", RFC: "rfc"}

#: (valid, invalid, acceptable) per file: the module docstring's table, checked against the files.
COUNTS = {
    P1363: (173, 89, 0),
    DER: (174, 310, 0),
    RSA: (9, 249, 1),
    SIG_GEN: (8, 0, 2),
    JWS: (36, 325, 0),
    JWK: (1, 11, 0),
    JWC: (2, 28, 0),
    RFC: (4, 0, 0),
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _slug(text: str) -> str:
    """``replaced r by n - r`` -> ``ReplacedRByNR``: a vector's comment as a readable, bounded test-id part."""
    return "".join(word[:1].upper() + word[1:] for word in re.split(r"[^A-Za-z0-9]+", text))[:40]


# --- 1. the signature layer -------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureVector:
    """One vector of a signature file: a message (arbitrary bytes, the signing input) and a signature."""

    file: str
    group: int
    tc: int
    result: str
    flags: tuple[str, ...]
    msg: bytes
    sig: bytes
    id: str


def _signature_vectors(name: str) -> list[SignatureVector]:
    vectors = []
    for index, group in enumerate(_load(name)["testGroups"]):
        for test in group["tests"]:
            label = _slug(test["comment"]) or (test["flags"] or [test["result"]])[0]
            vectors.append(
                SignatureVector(
                    name,
                    index,
                    test["tcId"],
                    test["result"],
                    tuple(test["flags"]),
                    bytes.fromhex(test["msg"]),
                    bytes.fromhex(test["sig"]),
                    f"{SHORT[name]}-tc{test['tcId']}-{label}",
                )
            )
    return vectors


def _params(vectors: list[SignatureVector]) -> list[Any]:
    return [pytest.param(vector, id=vector.id) for vector in vectors]


@cache
def _public_key(name: str, group: int) -> PublicKey:
    """A group's public key, read by the project's own parsers: ``parse_ec_jwk`` (ES256), ``parse_jwk`` (RS256)."""
    spec = _load(name)["testGroups"][group]
    if name in (P1363, DER):
        # Most P1363 groups give a JWK; the rest, and every DER group, give the point, made a JWK here.
        point = spec["publicKey"]
        coordinates = {c: _b64(int(point[f"w{c}"], 16).to_bytes(P256_BYTES, "big")) for c in ("x", "y")}
        return parse_ec_jwk(spec.get("publicKeyJwk") or {"kty": "EC", "crv": "P-256", **coordinates}, "wycheproof")
    return parse_jwk(spec["keyJwk"])[1]  # RSA: the Cloudflare key parser (sizes, exponent, ROCA)


#: What the signature layer does with each ``acceptable`` flag, and why that is what we want (True: it verifies).
ACCEPTABLE: Mapping[str, bool] = {
    # MissingNull (rsa_signature tc8): a DigestInfo whose SHA-256 AlgorithmIdentifier omits the NULL parameters.
    # RFC 8017 section 9.2 note 1 lets a verifier accept it; we refuse it. Every JWS signer writes the NULL, the
    # backend compares the whole encoding it rebuilds (no parsing of attacker-chosen ASN.1), and a second accepted
    # form of one signature buys nothing but another spelling of the same token.
    "MissingNull": False,
    # SmallPublicKey (sig_gen tc154, tc158): 2048-bit keys with e = 3. Accepted: with a verifier that rebuilds and
    # compares the full PKCS#1 v1.5 encoding, e = 3 is safe (Bleichenbacher's e = 3 forgery needs a lax parser),
    # RFC 7518 does not forbid it, and parse_jwk admits any odd e >= 3; the rsa_signature file calls the same keys
    # (tc258, tc259) valid outright.
    "SmallPublicKey": True,
}


def _should_verify(vector: SignatureVector) -> bool:
    if vector.result == "acceptable":
        pinned = {ACCEPTABLE[flag] for flag in vector.flags if flag in ACCEPTABLE}
        assert len(pinned) == 1, f"acceptable vector {vector.id} with flags {vector.flags} has no pinned behaviour"
        return pinned.pop()
    return vector.result == "valid"


def _check(alg: str, vector: SignatureVector, should_verify: bool) -> None:
    key = _public_key(vector.file, vector.group)
    if should_verify:
        verify_signature(alg, key, vector.sig, vector.msg, "wycheproof")  # raises InvalidToken if refused
    else:
        with pytest.raises(InvalidToken) as refused:
            verify_signature(alg, key, vector.sig, vector.msg, "wycheproof")
        assert refused.value.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize("vector", _params(_signature_vectors(P1363)))
def test_es256_p1363_vector(vector: SignatureVector) -> None:
    """ES256 with the raw ``r || s`` signature JWS uses: valid vectors verify, invalid ones are bad signatures."""
    _check("ES256", vector, _should_verify(vector))


@pytest.mark.parametrize("vector", _params(_signature_vectors(DER)))
def test_es256_der_vector_is_refused(vector: SignatureVector) -> None:
    """Every DER vector is refused, the valid ones too: RFC 7518 section 3.4 defines the ES256 signature as the
    64 bytes ``R || S``, and a DER SEQUENCE is another encoding of the same ``(r, s)``. Accepting it would give
    each token a second spelling that verifies (signature malleability: a token cache or replay list keyed by the
    token text sees a new token), and no JWS signer produces it.

    That the refusal is about the encoding alone shows in the valid ones: the same ``(r, s)`` as ``R || S``
    verifies with the same key.
    """
    _check("ES256", vector, should_verify=False)
    if vector.result == "valid":
        r, s = decode_dss_signature(vector.sig)
        raw = r.to_bytes(P256_BYTES, "big") + s.to_bytes(P256_BYTES, "big")
        verify_signature("ES256", _public_key(DER, vector.group), raw, vector.msg, "wycheproof")


@pytest.mark.parametrize("vector", _params(_signature_vectors(RSA)))
def test_rs256_vector(vector: SignatureVector) -> None:
    """RS256 (PKCS#1 v1.5, SHA-256, 2048-bit keys): valid vectors verify, invalid ones are bad signatures."""
    _check("RS256", vector, _should_verify(vector))


@cache
def _private_key(group: int) -> RSAPrivateKey:
    key = load_pem_private_key(_load(SIG_GEN)["testGroups"][group]["privateKeyPem"].encode("ascii"), None)
    assert isinstance(key, RSAPrivateKey)
    return key


@pytest.mark.parametrize("vector", _params(_signature_vectors(SIG_GEN)))
def test_rs256_generation_vector(vector: SignatureVector) -> None:
    """The expected signature verifies with the group's public key, and both signers the test issuers mint RS256
    with make exactly its bytes (PKCS#1 v1.5 is deterministic): ``testing_presets.sign`` and PyJWT's, which
    ``LocalIssuer`` uses. The tokens the suite mints are the tokens RS256 defines."""
    _check("RS256", vector, _should_verify(vector))
    key = _private_key(vector.group)
    assert sign(key, vector.msg) == vector.sig
    assert RSAAlgorithm(RSAAlgorithm.SHA256).sign(vector.msg, key) == vector.sig


# --- 2. the public path ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JoseVector:
    """One compact JWS of a JOSE file, with the key document its group serves."""

    file: str
    group: int
    tc: int
    result: str
    comment: str
    jws: str
    #: The JWK Set served: the group's public key (a JWK is wrapped in a set), or its private set when it has only that.
    document: Mapping[str, Any]

    @property
    def id(self) -> str:
        return f"{SHORT[self.file]}-tc{self.tc}-{_slug(self.comment)}"

    @property
    def header(self) -> dict[str, Any]:
        """The protected header (valid vectors only; an invalid one's may not decode)."""
        header: dict[str, Any] = json.loads(_unb64(self.jws.split(".")[0]))
        return header

    @property
    def has_rsa_key(self) -> bool:
        return any(jwk.get("kty") == "RSA" for jwk in self.document["keys"])


def _key_document(group: Mapping[str, Any]) -> dict[str, Any]:
    served = group.get("public") or group["private"]
    return served if "keys" in served else {"keys": [served]}


def _jose_vectors(name: str) -> list[JoseVector]:
    vectors = []
    for index, group in enumerate(_load(name)["testGroups"]):
        document = _key_document(group)
        for test in group["tests"]:
            vectors.append(
                JoseVector(name, index, test["tcId"], test["result"], test["comment"], test["jws"], document)
            )
    return vectors


JOSE_FILES = (JWS, JWK, JWC, RFC)
JOSE_VECTORS = [vector for name in JOSE_FILES for vector in _jose_vectors(name)]


class Stage(enum.Enum):
    """Where the verifier refused a token: before its signature was proven, or after."""

    BEFORE_SIGNATURE = "at or before the signature"
    AFTER_SIGNATURE = "after the signature verified"


#: The rule, by reason code: where in the verifier each refusal is raised (tokens.py, providers.py: shape, header,
#: key, signature, and only then the payload and its claims). A reason not listed here (keys_unavailable, a 500,
#: an acceptance) is wrong for every vector.
STAGE_OF_REASON: Mapping[str, Stage] = {
    "no_credentials": Stage.BEFORE_SIGNATURE,  # an empty header is no token at all
    "token_too_large": Stage.BEFORE_SIGNATURE,
    "token_malformed": Stage.BEFORE_SIGNATURE,  # shape, header, signature encoding (but see stage(): the payload)
    "algorithm_not_allowed": Stage.BEFORE_SIGNATURE,
    "unknown_key": Stage.BEFORE_SIGNATURE,
    "key_unusable": Stage.BEFORE_SIGNATURE,
    "bad_signature": Stage.BEFORE_SIGNATURE,
    "issuer_mismatch": Stage.AFTER_SIGNATURE,
    "audience_mismatch": Stage.AFTER_SIGNATURE,
    "claim_invalid": Stage.AFTER_SIGNATURE,
    "token_expired": Stage.AFTER_SIGNATURE,
    "token_not_yet_valid": Stage.AFTER_SIGNATURE,
}


def stage(reason: str | None, detail: str | None) -> Stage | None:
    """Where a refusal happened. ``token_malformed`` about the payload is after the signature: the payload segment
    is decoded only once its signature verifies."""
    if reason == "token_malformed" and (detail or "").startswith("the payload "):
        return Stage.AFTER_SIGNATURE
    return STAGE_OF_REASON.get(reason or "")


@dataclass(frozen=True)
class Expect:
    stage: Stage
    policy: str | None = None  # the POLICY entry (and so the exact reason) of a valid vector refused before it


#: Valid vectors refused before their signature on purpose: the reason code, and a word on why (comments: the why).
POLICY: Mapping[str, tuple[str, str]] = {
    # Each preset pins its algorithms from configuration, never from the token: RS256 for Cloudflare, ES256 and
    # RS256 as configured here for Pomerium. RS384/RS512, PS256/384/512 and ES512 (P-521) are valid JOSE but no
    # supported proxy signs with them, and every algorithm accepted is more code an attacker can aim at.
    "other-algorithm": ("algorithm_not_allowed", "the algorithm is not one the preset accepts"),
    # Every proxy names its key, and with a key set of several keys a token without a kid would have to be tried
    # against each: refused as not naming a known key (RFC 7515 A.2/A.3 carry none; their signatures are checked
    # at the signature layer instead).
    "no-kid": ("unknown_key", "the header names no key"),
    # A JWT's payload is a JSON object, never empty (RFC 7519 section 7.2): an empty segment is refused with the
    # token's shape, before any key is looked up or any RSA work done (the signature is checked directly instead).
    "empty-payload": ("token_malformed", "the payload segment is empty"),
}


def expectation(vector: JoseVector, algorithms: tuple[str, ...]) -> Expect:
    """What the vector's verdict demands of a preset that accepts ``algorithms``."""
    if vector.result == "invalid":
        return Expect(Stage.BEFORE_SIGNATURE)
    assert vector.result == "valid", f"{vector.id}: no behaviour pinned for a {vector.result!r} JOSE vector"
    header = vector.header  # the checks in the verifier's order: shape, then the header's alg, then its kid
    if not vector.jws.split(".")[1]:
        policy = "empty-payload"
    elif header.get("alg") not in algorithms:
        policy = "other-algorithm"
    elif "kid" not in header:
        policy = "no-kid"
    else:
        return Expect(Stage.AFTER_SIGNATURE)
    return Expect(Stage.BEFORE_SIGNATURE, policy)


@dataclass(frozen=True)
class Preset:
    """How one preset is configured for a served key document, and where its token goes."""

    name: str
    header: str
    algorithms: tuple[str, ...]

    def settings(self, certs_url: str) -> Settings:
        common: dict[str, Any] = {
            "exposure_mode": ExposureMode.REVERSE_PROXY,
            "certs_url": certs_url,
            "jwks_refresh_cooldown_seconds": 0.0,  # loopback: a kid the set does not list is answered at once
        }
        if self.name == "cloudflare":
            return Settings(team_domain="wycheproof.cloudflareaccess.com", audiences=("0" * 64,), **common)
        host = "app.wycheproof.test"
        return Settings(
            provider=Provider.POMERIUM, issuers=(host,), audiences=(host,), algorithms=self.algorithms, **common
        )


POMERIUM = Preset("pomerium", "X-Pomerium-Jwt-Assertion", ("ES256", "RS256"))
CLOUDFLARE = Preset("cloudflare", "Cf-Access-Jwt-Assertion", ("RS256",))


class KeyDocuments(LoopbackKeyServer):
    """Every group's key document, at ``/<file>/<group>/jwks.json`` on one loopback server."""

    def __init__(self, vectors: list[JoseVector]) -> None:
        super().__init__(max_seconds=300.0)
        self.documents = {self.path(v): json.dumps(v.document).encode() for v in vectors}

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @staticmethod
    def path(vector: JoseVector) -> str:
        return f"/{SHORT[vector.file]}/{vector.group}/jwks.json"

    def answer(self, path: str) -> Response:
        body = self.documents.get(path)
        if body is None:
            return 404, {"Content-Type": "text/plain"}, b"not found"
        return 200, {"Content-Type": "application/json"}, body


class PublicPath:
    """Apps behind the real middleware, one per (preset, group), kept open while consecutive tests use them."""

    def __init__(self, keys: KeyDocuments) -> None:
        self.keys = keys
        self.events: list[AuditEvent] = []
        self._open: tuple[tuple[str, str], TestClient] | None = None

    def client(self, preset: Preset, vector: JoseVector) -> TestClient:
        path = KeyDocuments.path(vector)
        if self._open is not None and self._open[0] == (preset.name, path):
            return self._open[1]
        self.close()
        settings = preset.settings(self.keys.base_url + path)
        client = TestClient(build_app(settings, audit_hook=self.events.append), base_url=LOCAL_BASE_URL,
                            client=REMOTE_PEER)  # fmt: skip
        client.__enter__()  # lifespan: the key set is fetched here, once per app
        self._open = ((preset.name, path), client)
        return client

    def send(self, preset: Preset, vector: JoseVector) -> tuple[int, dict[str, str], AuditEvent]:
        client = self.client(preset, vector)
        self.events.clear()
        response = client.get("/", headers={preset.header: vector.jws})
        assert len(self.events) == 1, self.events
        return response.status_code, error_of(response), self.events[0]

    def close(self) -> None:
        if self._open is not None:
            self._open[1].__exit__(None, None, None)
            self._open = None


@pytest.fixture(scope="module")
def public_path() -> Iterator[PublicPath]:
    with KeyDocuments(JOSE_VECTORS) as keys:
        path = PublicPath(keys)
        try:
            yield path
        finally:
            path.close()


def _public_params() -> list[Any]:
    params = []
    for preset in (POMERIUM, CLOUDFLARE):
        for vector in JOSE_VECTORS:
            if preset is POMERIUM or vector.has_rsa_key:
                params.append(pytest.param(preset, vector, id=f"{preset.name}-{vector.id}"))
    return params


def _group_key(vector: JoseVector) -> PublicKey:
    """The key a vector's kid names (or the group's only key), read by the Pomerium preset's parser."""
    jwks = vector.document["keys"]
    kid = vector.header.get("kid")
    jwk = next((k for k in jwks if k.get("kid") == kid), jwks[0]) if kid else jwks[0]
    return jwk_parser(POMERIUM.algorithms)(jwk)[1]


@pytest.mark.parametrize(("preset", "vector"), _public_params())
def test_jose_vector_through_the_public_path(public_path: PublicPath, preset: Preset, vector: JoseVector) -> None:
    """A valid vector gets past the signature (or is refused before it by a POLICY named here); an invalid one is
    refused at or before it. Never an acceptance, a 503 or a 500: no payload here names a user."""
    status, error, event = public_path.send(preset, vector)
    expect = expectation(vector, preset.algorithms)
    where = stage(event.reason, event.detail)
    assert (status, event.outcome, error["reason"]) == (401, "refused", event.reason), event
    assert where is expect.stage, f"{vector.result} vector refused {event.reason} ({event.detail}): {where}"
    if expect.policy is not None:
        reason, why = POLICY[expect.policy]
        assert event.reason == reason, f"policy {expect.policy} ({why}): got {event}"
    alg = vector.header["alg"] if vector.result == "valid" else None
    if expect.policy in ("no-kid", "empty-payload") and alg in ("RS256", "ES256"):
        # Refused before the signature by policy, but the vector is valid: its signature verifies at the layer.
        signing_input, _, signature = vector.jws.rpartition(".")
        verify_signature(alg, _group_key(vector), _unb64(signature), signing_input.encode("ascii"), "wycheproof")


def _unusable_kids(document: Mapping[str, Any]) -> tuple[set[str], Mapping[str, str]]:
    try:
        keys, _, unusable = parse_jwks(document, jwk_parser(POMERIUM.algorithms))
    except JWKSFetchError as exc:
        return set(), exc.unusable or {}
    return set(keys), unusable


@pytest.mark.parametrize(
    "vector", [pytest.param(v, id=v.id) for v in JOSE_VECTORS if v.file == JWK and v.result == "invalid"]
)
def test_the_key_an_invalid_jwk_vector_names_is_unusable(vector: JoseVector) -> None:
    """json_web_key_test.json is about keys: for each invalid vector the key set lists the token's kid as unusable
    (so a token naming it is 401 key_unusable, not 503). This matters for tc8 (1024-bit) and tc9 (e = 1), whose
    empty payloads are refused on the public path before any key is looked up."""
    usable, unusable = _unusable_kids(vector.document)
    kid = vector.header["kid"]
    assert kid not in usable
    assert kid in unusable


def test_the_counts_in_the_docstring_are_the_files() -> None:
    for name, expected in COUNTS.items():
        results = [test["result"] for group in _load(name)["testGroups"] for test in group["tests"]]
        assert (results.count("valid"), results.count("invalid"), results.count("acceptable")) == expected, name
        assert len(results) == sum(expected), name
