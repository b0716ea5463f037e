"""A local stand-in for a Cloudflare Access team, for your own tests and demos.

:class:`LocalIssuer` makes real RSA keys, serves their certs document over real
HTTP on 127.0.0.1, mints identity and service tokens the way Cloudflare shapes
them, and rotates keys the way Cloudflare does (the new key published beside the
old one, the old one withdrawn later). The server binds loopback only, answers a
bounded number of requests, and stops itself after ``max_seconds``.

    with LocalIssuer() as issuer:
        settings = issuer.settings(service_tokens={"ci": "ci.access"})
        app.add_middleware(CloudflareAccessMiddleware, settings=settings, user_lookup=find)
        token = issuer.identity_token("alice@example.com")   # or issuer.service_token("ci.access")
        issuer.rotate()                                      # the next request already accepts the new key
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from ..core.settings import ApiKey, ExposureMode, ServiceToken, Settings

__all__ = [
    "LocalIssuer",
    "LoopbackKeyServer",
    "Response",
    "new_rsa_key",
    "public_jwk",
]


Response = tuple[int, Mapping[str, str], bytes]
_Server = TypeVar("_Server", bound="LoopbackKeyServer")


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A fresh RSA private key (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_jwk(kid: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """The JWK Cloudflare would publish for ``key``: kid, kty, alg, use, e, n."""
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return jwk


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up early (a timeout or size-limit test) is expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackKeyServer:
    """A key endpoint on 127.0.0.1 for a test issuer: a background thread, a request budget, a time limit.

    It binds loopback only, answers ``max_requests`` requests (then 503 and stops),
    and stops itself after ``max_seconds``; :meth:`stop` and :meth:`start` take the
    endpoint down and bring it back on the same port. Subclasses say what is served
    where (:meth:`answer`); :class:`LocalIssuer` and the issuers of
    :mod:`cfaccess_mw.testing_presets` are the ones this package has.
    """

    def __init__(self, *, max_requests: int = 100_000, max_seconds: float = 900.0, port: int = 0) -> None:
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.fetch_count = 0
        self._server: ThreadingHTTPServer | None = None
        self._port = port  # 0: a free one; kept across stop() and start(), so a test can bring the endpoint back
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        #: Extra GET endpoints by path, each given the query string and the ``Host`` header (``cfaccess-mw dev``
        #: mints tokens at one).
        self.routes: dict[str, Callable[[str, str], Response]] = {}

    def answer(self, path: str) -> Response:
        """The response to a GET of ``path`` (the query string removed)."""
        raise NotImplementedError

    def start(self: _Server) -> _Server:
        """Serve on 127.0.0.1 in a background thread: a free port, then the same one after stop()."""
        if self._server is not None:
            return self
        respond = self._respond

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, headers, body = respond(self.path, self.headers.get("Host", ""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if not any(name.lower() == "content-length" for name in headers):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = _QuietServer(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self._timer = threading.Timer(self.max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _respond(self, path: str, host: str = "") -> Response:
        with self._lock:
            self.fetch_count += 1
            count = self.fetch_count
        if count > self.max_requests:
            threading.Thread(target=self.stop, daemon=True).start()
            return 503, {"Connection": "close"}, b"request budget exhausted"
        path, _, query = path.partition("?")
        route = self.routes.get(path)
        return route(query, host) if route is not None else self.answer(path)

    @property
    def running(self) -> bool:
        """Whether the endpoint is being served (it stops itself after ``max_seconds``)."""
        return self._server is not None

    def stop(self) -> None:
        """Stop the server (idempotent); until start() runs again, connections to it are refused."""
        server, self._server = self._server, None
        if self._timer is not None:
            self._timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LocalIssuer(LoopbackKeyServer):
    """Keys, a loopback certs endpoint and a token minter for one Access application."""

    def __init__(
        self,
        *,
        team_domain: str = "test-team.cloudflareaccess.com",
        audience: str | None = None,
        max_requests: int = 100_000,
        max_seconds: float = 900.0,
        port: int = 0,
    ) -> None:
        super().__init__(max_requests=max_requests, max_seconds=max_seconds, port=port)
        self.team_domain = team_domain
        self.audience = audience if audience is not None else secrets.token_hex(32)
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        self.signing_kid = self.add_key()
        #: When set, called for each certs request instead of serving the document (to misbehave on purpose).
        self.responder: Callable[[], Response] | None = None

    def __repr__(self) -> str:
        return f"LocalIssuer(team_domain={self.team_domain!r}, kids={list(self._keys)!r})"

    # --- keys ---------------------------------------------------------------------------------

    def add_key(self, key: rsa.RSAPrivateKey | None = None) -> str:
        """Publish a new key (not yet used for signing); return its kid."""
        kid = secrets.token_hex(32)
        self._keys[kid] = key if key is not None else new_rsa_key()
        return kid

    def rotate(self, keep_old: bool = True) -> str:
        """Publish a new key and sign with it from now on; keep the old one published unless told not to."""
        old = self.signing_kid
        self.signing_kid = self.add_key()
        if not keep_old:
            self.remove_key(old)
        return self.signing_kid

    def remove_key(self, kid: str) -> None:
        """Withdraw a key from the certs document."""
        del self._keys[kid]

    def private_key(self, kid: str | None = None) -> rsa.RSAPrivateKey:
        """The private key behind ``kid`` (default: the signing key)."""
        return self._keys[kid or self.signing_kid]

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def certs_document(self) -> dict[str, Any]:
        """The body Cloudflare serves at ``/cdn-cgi/access/certs`` (``keys`` only; the PEM copies are omitted)."""
        return {"keys": [public_jwk(kid, key) for kid, key in self._keys.items()]}

    # --- tokens -------------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return f"https://{self.team_domain}"

    def mint(
        self, claims: Mapping[str, Any], *, kid: str | None = None, headers: Mapping[str, Any] | None = None
    ) -> str:
        """Sign ``claims`` exactly as given (RS256, with ``kid``); nothing is added."""
        kid = kid or self.signing_kid
        return jwt.encode(dict(claims), self._keys[kid], algorithm="RS256", headers={"kid": kid, **(headers or {})})

    def base_claims(self, lifetime: float = 300.0, now: float | None = None) -> dict[str, Any]:
        """``aud``, ``iss``, ``iat``, ``nbf``, ``exp`` and ``type`` as Cloudflare sets them."""
        issued = int(time.time() if now is None else now)
        return {
            "aud": [self.audience],
            "iss": self.issuer,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(lifetime),
            "type": "app",
        }

    def identity_token(self, email: str, *, lifetime: float = 300.0, kid: str | None = None, **claims: Any) -> str:
        """A user's application token: base claims plus ``email``, ``sub``, ``identity_nonce``, ``country``."""
        payload = self.base_claims(lifetime)
        payload.update(
            {
                "email": email,
                "sub": secrets.token_hex(16),
                "identity_nonce": secrets.token_urlsafe(12),
                "country": "US",
            }
        )
        payload.update(claims)
        return self.mint(payload, kid=kid)

    def service_token(self, client_id: str, *, lifetime: float = 300.0, kid: str | None = None, **claims: Any) -> str:
        """A service token's application token: base claims plus ``common_name`` (the client ID), empty ``sub``."""
        payload = self.base_claims(lifetime)
        payload.update({"common_name": client_id, "sub": ""})
        payload.update(claims)
        return self.mint(payload, kid=kid)

    # --- configuration ------------------------------------------------------------------------

    #: The header the middleware reads the token from (lower case), as on the preset issuers.
    header_name = "cf-access-jwt-assertion"

    def request_headers(self, token: str) -> dict[str, str]:
        """The header carrying ``token`` as Cloudflare Access forwards it: ``{"cf-access-jwt-assertion": token}``."""
        return {self.header_name: token}

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, where the certs endpoint is served."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started; use it as a context manager or call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def certs_url(self) -> str:
        return f"{self.base_url}/cdn-cgi/access/certs"

    def settings(self, **overrides: Any) -> Settings:
        """Settings for a middleware that trusts this issuer (reverse-proxy mode unless overridden).

        Two things differ from a deployment's defaults, so tests do the obvious thing:

        * the refetch cooldown is 0 (allowed only because the certs URL is loopback), so a key published by
          :meth:`rotate` is accepted by the very next request instead of 10 seconds later;
        * ``service_tokens`` and ``api_keys`` also take a mapping, ``{"ci": client_id}`` and
          ``{"operator": plaintext_key}``, so admitting what the test mints takes one argument.

        Any other keyword is a :class:`Settings` field (``public_paths=("/healthz",)``).
        """
        values: dict[str, Any] = {
            "exposure_mode": ExposureMode.REVERSE_PROXY,
            "team_domain": self.team_domain,
            "audiences": (self.audience,),
            "certs_url": self.certs_url,
            "jwks_refresh_cooldown_seconds": 0.0,
        }
        values.update(overrides)
        if isinstance(values.get("service_tokens"), Mapping):
            values["service_tokens"] = tuple(ServiceToken(n, cid) for n, cid in values["service_tokens"].items())
        if isinstance(values.get("api_keys"), Mapping):
            values["api_keys"] = tuple(ApiKey.from_secret(n, key) for n, key in values["api_keys"].items())
        return Settings(**values)

    def env(self, **overrides: str) -> dict[str, str]:
        """The ``CFACCESS_*`` variables a deployer would set for this issuer, with the test-friendly cooldown of 0.

        For an app that calls ``Settings.from_env()`` when it is imported: put these in
        ``os.environ`` (``monkeypatch.setenv``) before the import. Keywords are variable
        names: ``issuer.env(CFACCESS_SERVICE_TOKENS=f"ci={client_id}")``.
        """
        values = {
            "CFACCESS_EXPOSURE_MODE": "reverse-proxy",
            "CFACCESS_TEAM_DOMAIN": self.team_domain,
            "CFACCESS_AUD": self.audience,
            "CFACCESS_CERTS_URL": self.certs_url,
            "CFACCESS_JWKS_REFRESH_COOLDOWN_SECONDS": "0",
        }
        values.update(overrides)
        return values

    # --- the certs server ---------------------------------------------------------------------

    def answer(self, path: str) -> Response:
        if path != "/cdn-cgi/access/certs":
            return 404, {"Content-Type": "text/plain"}, b"not found"
        if self.responder is not None:
            return self.responder()
        body = json.dumps(self.certs_document()).encode()
        return 200, {"Content-Type": "application/json"}, body
