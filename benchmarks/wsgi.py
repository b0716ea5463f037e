"""The sync path's cost: a bare Flask app against the same app behind our Flask extension and behind the Flask
peers, a bare WSGI callable against our WSGI middleware, and the raw RSA verify, all in one interleaved run,
printed as one markdown table.

    .venv/bin/python -m benchmarks.wsgi              # about two minutes, signing the fresh tokens included
    .venv/bin/python -m benchmarks.wsgi --quick      # a smoke run
    .venv/bin/python -m benchmarks.wsgi --ab main    # also main's extension and middleware, interleaved

The peers are measured where they are installed (benchmarks/README.md says how); the table says which are not.

Each request is the WSGI call itself (``app(environ, start_response)``, its body read), with a fresh copy of one
environ per call, so nothing is cached between requests that a server would build anew (header values are ``str``
in an environ and encoded per request, so no cached bytes hash flatters a cache keyed by bytes). The cases run
interleaved round by round (:func:`benchmarks.common.time_sync_group`); a case's figure is its best round.

Fresh tokens come from a pool signed before the clock starts, each used once a round; before each round, outside
the clock, the case's token cache is refilled to its size with other entries (ours: as ``benchmarks/inprocess.py``
does for ASGI; flask-cloudflare-login: its payload cache), so every fresh token is a miss, an insertion and an
eviction.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import logging
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from flask import Flask

from cfaccess_mw.testing import LocalIssuer
from cfaccess_mw.wsgi import PRINCIPAL_KEY, CloudflareAccessWSGIMiddleware

from . import flask_peers
from .ab import load_revision
from .common import time_sync_group
from .inprocess import _cache_prefiller

EMAIL = "alice@example.com"
USER = {"name": "Alice"}


def find_user(email: str) -> dict[str, str] | None:
    return USER if email == EMAIL else None


def flask_app(protected: bool, issuer: LocalIssuer, package: ModuleType | None = None, **settings: Any) -> Flask:
    """The bare app, or the same app behind our extension (``package``'s: another revision's, for ``--ab``)."""
    app = Flask("bench")
    if protected:
        flask_module: Any = _module(package, "flask")
        principal = flask_module.current_principal
        flask_module.CloudflareAccess(app, _settings(issuer, package, **settings), user_lookup=find_user)

        @app.get("/")
        def who() -> str:
            return str(principal.user["name"])  # what the peers' views answer: the user's name

    else:

        @app.get("/")
        def hello() -> str:
            return USER["name"]

    return app


def _module(package: ModuleType | None, name: str) -> Any:
    """This tree's ``cfaccess_mw.<name>``, or ``package``'s (another revision's, imported under another name)."""
    return importlib.import_module(f"{package.__name__ if package else 'cfaccess_mw'}.{name}")


def _settings(issuer: LocalIssuer, package: ModuleType | None, **overrides: Any) -> Any:
    """The issuer's settings, as ``package``'s own ``Settings`` class (the same values) when one is given."""
    settings = issuer.settings(**overrides)
    if package is None:
        return settings
    return _module(package, "settings").Settings(
        **{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    )


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    principal = environ.get(PRINCIPAL_KEY)
    body = (principal.display_name if principal is not None else EMAIL).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Callable[[bytes], None]:
    assert status.startswith("200"), status
    return lambda data: None


def _call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> object:
    """One call of ``app`` as a server makes it: a fresh environ, the body read, the iterable closed."""
    body = app(dict(environ), _start_response)
    data = b"".join(body)
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return data


def request(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Callable[[], object]:
    """The same request, again and again."""
    return lambda: _call(app, environ)


class FreshRequests:
    """One request per environ of a pool, each environ once per round: :meth:`refill` (between rounds, outside the
    clock) refills the case's token cache with other entries and starts the pool over, so every request is a miss.
    A round that would need more environs than the pool holds stops the run (give a larger ``--pool``)."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], environs: Sequence[dict[str, Any]], refill: Callable[[], None]
    ) -> None:
        self.app, self.environs, self._refill, self.used = app, environs, refill, 0

    def refill(self) -> None:
        self._refill()
        self.used = 0

    def __call__(self) -> object:
        if self.used == len(self.environs):
            raise RuntimeError(
                f"the fresh-token pool ({len(self.environs)}) ran out within a round: use a larger --pool"
            )
        self.used += 1
        return _call(self.app, self.environs[self.used - 1])


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, batch: float) -> dict[str, list[float]]:
    """:func:`~benchmarks.common.time_sync_group`, one round at a time, the fresh-token pools refilled before each
    (a refill of 4,096 entries costs milliseconds: inside the clock it would be a microsecond or more a request)."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for case in cases.values():
            if isinstance(case, FreshRequests):
                case.refill()
        for name, values in time_sync_group(cases, 1, batch).items():
            samples[name] += values
    return samples


def environ_for(token: str, *, cookie: bool = False) -> dict[str, Any]:
    """``GET /`` as gunicorn's environ has it, the token in ``Cf-Access-Jwt-Assertion`` or, with ``cookie=True``,
    in the ``CF_Authorization`` cookie."""
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "RAW_URI": "/",  # as gunicorn sends it (Werkzeug's server sends it too, and REQUEST_URI)
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "REMOTE_PORT": "51000",
        "HTTP_HOST": "app.example.com",
        "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if cookie:
        environ["HTTP_COOKIE"] = f"CF_Authorization={token}"
    else:
        environ["HTTP_CF_ACCESS_JWT_ASSERTION"] = token
    return environ


def raw_rsa_verify(issuer: LocalIssuer, token: str) -> Callable[[], object]:
    """``cryptography``'s RSA-2048 PKCS#1 v1.5 SHA-256 verify of ``token``'s signature, nothing else."""
    header, payload, signature = token.split(".")
    signing_input = f"{header}.{payload}".encode("ascii")
    raw = jwt.utils.base64url_decode(signature)
    key = issuer.private_key().public_key()
    padding, sha256 = PKCS1v15(), SHA256()
    return lambda: key.verify(raw, signing_input, padding, sha256)


#: The rows: (name, what its added time is measured over; None for a base row).
ROWS: list[tuple[str, str | None]] = [
    ("bare Flask", None),
    ("ours, Flask extension, same token", "bare Flask"),
    ("before: ours, Flask extension, same token", "bare Flask"),
    ("ours, Flask extension, same token in the cookie", "bare Flask"),
    ("ours, Flask extension, fresh token", "bare Flask"),
    ("flask-cfaccess, same token", "bare Flask"),
    ("flask-cloudflare-login + Flask-Login, same token (cookie)", "bare Flask"),
    ("flask-cloudflare-login + Flask-Login, fresh token (cookie)", "bare Flask"),
    ("bare WSGI callable", None),
    ("ours, WSGI middleware, same token", "bare WSGI callable"),
    ("before: ours, WSGI middleware, same token", "bare WSGI callable"),
    ("raw RSA verify (cryptography)", None),
]
RAW = "raw RSA verify (cryptography)"
BEFORE = "before: "  # the rows of the revision given to --ab
#: Rows whose added time is a token verification (no cache, or a miss): shown as a multiple of the raw verify.
VERIFYING = {
    "ours, Flask extension, fresh token",
    "flask-cfaccess, same token",
    "flask-cloudflare-login + Flask-Login, fresh token (cookie)",
}

NOTES = """\
Notes. Added = the case's best round minus its base's (bare Flask, or the bare WSGI callable for the middleware);
"÷ bare Flask" divides it by the bare Flask request (issue 19's target for a repeated token: 0.10x); "÷ raw RSA"
divides it by the raw verify (the target for a fresh token: 1.5x). Ours runs with the default settings (reverse-proxy
mode, audience and issuer checked, token cache of 4,096, user lookup a dict) and its acceptances are not logged
(the audit logger above INFO), as the peers log nothing. The peers, set up as their documentation says
(benchmarks/flask_peers.py has the details): flask-cfaccess 0.1.1 checks signature, audience and expiry but **not
the issuer**, keeps no token cache (every request is a full `jwt.decode`, so its same-token row is a verify), its
certs client is replaced after `init_app` by one on the loopback URL with its defaults, an expired or wrong-audience
token is a 500, not a 401, and it is installed with `--no-deps` (it pins Flask ~=2.2.3 and PyJWT ~=2.6.0; under that
PyJWT it refuses every token with a `TypeError`). flask-cloudflare-login 0.7.5 reads **only** the
`CF_Authorization` cookie (its rows carry the token there; ours has a cookie row with `allow_cookie` for
comparison), checks signature, audience and expiry but **not the issuer**, takes the algorithm from the token's
header, caches payloads by token for 10 minutes regardless of their expiry, and **fetches the key set on every
cache miss** (its https certs URL is sent to the loopback endpoint: a real HTTP request per fresh token); it runs
under Flask-Login's `request_loader` and `login_required`. Neither peer looks users up; their views look the email
up in the same table ours does."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wsgi", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (fewer, shorter rounds, fewer tokens)")
    parser.add_argument("--pool", type=int, default=None, help="fresh tokens signed for the fresh rows")
    parser.add_argument(
        "--ab",
        metavar="REF",
        help="also measure REF's Flask extension and WSGI middleware (a git revision), interleaved",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        before = load_revision(args.ab, Path(tmp)) if args.ab else None
        return run(args, before)


def run(args: argparse.Namespace, before: ModuleType | None) -> int:
    rounds, batch = (3, 0.05) if args.quick else (25, 0.1)  # many short rounds: more chances of a quiet one
    pool_size = args.pool or (1000 if args.quick else 4000)  # a round's fresh batch and calibration must fit
    logging.getLogger("cfaccess_mw").setLevel(logging.WARNING)  # acceptances are audited at INFO: not measured
    peers = flask_peers.available()
    with LocalIssuer(max_requests=1_000_000) as issuer:
        token = issuer.identity_token(EMAIL, lifetime=3600)
        pool = [issuer.identity_token(EMAIL, lifetime=3600) for _ in range(pool_size)]
        environ, cookie_environ = environ_for(token), environ_for(token, cookie=True)
        fresh = [environ_for(t) for t in pool]
        ours, fresh_app = flask_app(True, issuer), flask_app(True, issuer)
        cases: dict[str, Callable[[], object]] = {
            "bare Flask": request(flask_app(False, issuer).wsgi_app, environ),
            "ours, Flask extension, same token": request(ours.wsgi_app, environ),
            "ours, Flask extension, same token in the cookie": request(
                flask_app(True, issuer, allow_cookie=True).wsgi_app, cookie_environ
            ),
            "ours, Flask extension, fresh token": FreshRequests(
                fresh_app.wsgi_app, fresh, _cache_prefiller(fresh_app.extensions["cfaccess_mw"].authenticator, token)
            ),
        }
        if peers["flask-cfaccess"]:
            cases["flask-cfaccess, same token"] = request(
                flask_peers.flask_cfaccess_app(issuer, find_user).wsgi_app, environ
            )
        if peers["flask-cloudflare-login"]:
            login_app = flask_peers.flask_cloudflare_login_app(issuer, find_user).wsgi_app
            cases["flask-cloudflare-login + Flask-Login, same token (cookie)"] = request(login_app, cookie_environ)
            cases["flask-cloudflare-login + Flask-Login, fresh token (cookie)"] = FreshRequests(
                login_app, [environ_for(t, cookie=True) for t in pool], flask_peers.flask_cloudflare_login_refiller()
            )
        cases["bare WSGI callable"] = request(wsgi_app, environ)
        cases["ours, WSGI middleware, same token"] = request(
            CloudflareAccessWSGIMiddleware(wsgi_app, issuer.settings(), user_lookup=find_user), environ
        )
        if before is not None:
            cases[BEFORE + "ours, Flask extension, same token"] = request(
                flask_app(True, issuer, before).wsgi_app, environ
            )
            cases[BEFORE + "ours, WSGI middleware, same token"] = request(
                _module(before, "wsgi").CloudflareAccessWSGIMiddleware(
                    wsgi_app, _settings(issuer, before), user_lookup=find_user
                ),
                environ,
            )
        cases[RAW] = raw_rsa_verify(issuer, token)
        for name, call in cases.items():  # each answers 200 with the user's name (an assertion in _start_response)
            assert call() in (b"Alice", EMAIL.encode(), None), name
        samples = interleaved(cases, rounds, batch)
    print(table(samples))
    missing = [name for name, present in peers.items() if not present]
    if missing:
        print(f"\nNot installed here, so not measured: {', '.join(missing)} (see benchmarks/README.md).")
    return 0


def table(samples: dict[str, list[float]]) -> str:
    """The markdown table (and its notes) of one run's samples (ns per call, one per round)."""
    best = {name: min(values) / 1000 for name, values in samples.items()}
    bare_flask, raw = best["bare Flask"], best[RAW]
    lines = [
        "| case | µs per request | added µs | added ÷ bare Flask | added ÷ raw RSA |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, base in ROWS:
        if name not in best:
            continue
        if base is None:
            lines.append(f"| {name} | {best[name]:.1f} | | | |")
            continue
        added = best[name] - best[base]
        verifying = f"{added / raw:.2f}x" if name in VERIFYING else ""
        lines.append(f"| {name} | {best[name]:.1f} | {added:.1f} | {added / bare_flask:.2f}x | {verifying} |")
    return "\n".join(lines) + "\n\n" + NOTES


if __name__ == "__main__":
    sys.exit(main())
