"""The sync path's cost: a bare Flask (and bare WSGI) request against the same app behind the Flask extension and
the WSGI middleware, with a repeated token, measured side by side in one run and printed as ratios.

    .venv/bin/python -m benchmarks.wsgi            # about a minute
    .venv/bin/python -m benchmarks.wsgi --quick    # a smoke run

Each request is the WSGI call itself (``app(environ, start_response)``, its body read), with a fresh copy of one
environ per call, so nothing is cached between requests that a server would build anew (header values are ``str``
in an environ; the middleware encodes them per request, so no cached bytes hash flatters it). The cases run
interleaved round by round (:func:`benchmarks.common.time_sync_group`); a case's figure is its best round.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from cfaccess_mw.integrations.flask import CloudflareAccess, current_principal
from cfaccess_mw.integrations.wsgi import PRINCIPAL_KEY, CloudflareAccessWSGIMiddleware
from cfaccess_mw.testing import LocalIssuer

from .common import time_sync_group

EMAIL = "alice@example.com"
USER = {"name": "Alice"}


def find_user(email: str) -> dict[str, str] | None:
    return USER if email == EMAIL else None


def flask_app(protected: bool, issuer: LocalIssuer) -> Flask:
    app = Flask("bench")
    if protected:
        CloudflareAccess(app, issuer.settings(), user_lookup=find_user)

        @app.get("/")
        def who() -> str:
            return current_principal.display_name

    else:

        @app.get("/")
        def hello() -> str:
            return EMAIL

    return app


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    principal = environ.get(PRINCIPAL_KEY)
    body = (principal.display_name if principal is not None else EMAIL).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Callable[[bytes], None]:
    assert status.startswith("200"), status
    return lambda data: None


def request(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Callable[[], object]:
    """One call of ``app`` as a server makes it: a fresh environ, the body read, the iterable closed."""

    def call() -> object:
        body = app(dict(environ), _start_response)
        data = b"".join(body)
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return data

    return call


def environ_for(token: str) -> dict[str, Any]:
    import io

    return {
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
        "HTTP_CF_ACCESS_JWT_ASSERTION": token,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wsgi", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (fewer, shorter rounds)")
    args = parser.parse_args(argv)
    rounds, batch = (3, 0.05) if args.quick else (15, 0.2)
    logging.getLogger("cfaccess_mw").setLevel(logging.WARNING)  # acceptances are audited at INFO: not measured
    with LocalIssuer() as issuer:
        token = issuer.identity_token(EMAIL, lifetime=3600)
        environ = environ_for(token)
        bare_flask = flask_app(False, issuer)
        cases = {
            "bare WSGI app": request(wsgi_app, environ),
            "WSGI middleware, same token": request(
                CloudflareAccessWSGIMiddleware(wsgi_app, issuer.settings(), user_lookup=find_user), environ
            ),
            "bare Flask": request(bare_flask.wsgi_app, environ),
            "Flask extension, same token": request(flask_app(True, issuer).wsgi_app, environ),
        }
        samples = time_sync_group(cases, rounds, batch)
    best = {name: min(values) / 1000 for name, values in samples.items()}
    print("| case | best µs | added µs | ratio added / bare |")
    print("| --- | ---: | ---: | ---: |")
    for name, base in (
        ("bare WSGI app", None),
        ("WSGI middleware, same token", "bare WSGI app"),
        ("bare Flask", None),
        ("Flask extension, same token", "bare Flask"),
    ):
        if base is None:
            print(f"| {name} | {best[name]:.1f} | | |")
        else:
            added = best[name] - best[base]
            print(f"| {name} | {best[name]:.1f} | {added:.1f} | {added / best[base]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
