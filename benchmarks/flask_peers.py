"""The Flask peers of ``python -m benchmarks.wsgi``, set up as their documentation says, on our tokens and keys.

Both are imported lazily: they live only where the ``bench`` extra (and ``run.sh``) installed them. Each wraps a
Flask app with the same one route as the bare app, answering the caller's name from the same user table, and
fetches its keys from the same loopback certs endpoint (:class:`~cfaccess_mw.testing.LocalIssuer`), 127.0.0.1
only. Where a peer cannot be pointed at that endpoint by configuration, the one thing changed is said here and in
the table's notes.

* **flask-cfaccess 0.1.1** (``CfAccess``): reads the ``Cf-Access-Jwt-Assertion`` header (then the
  ``CF_Authorization`` cookie), so it takes our token as issued. Configured by ``CLOUDFLARE_ACCESS_AUD`` and
  ``CLOUDFLARE_ACCESS_TEAM``; every route is protected with the ``before_request`` its getting-started guide
  shows. Its ``PyJWKClient`` URL is built as ``https://<team>.cloudflareaccess.com/...``, so, as its own tests
  do, the client in ``app.extensions["cfaccess"]`` is replaced after ``init_app``, here by one with the same
  defaults (key set kept 300 s, no key cache) on the loopback URL. It keeps no token cache: every request is a
  full ``jwt.decode``. It checks signature, audience and expiry, **not the issuer**; an expired or wrong-audience
  token raises out of ``authenticate`` (only ``DecodeError`` is caught), so the app answers 500, not 401. Its
  ``get_identity()`` asks Cloudflare's identity endpoint over the network, so the view reads the payload it
  verified (``g._cfaccess_payload``) instead. It pins ``Flask~=2.2.3`` and ``PyJWT~=2.6.0``, which conflict with
  this project's (Flask >= 3.0, PyJWT >= 2.8): ``run.sh`` installs it with ``--no-deps``; under its own pin,
  PyJWT 2.6's ``jwt.decode`` refuses the ``PyJWK`` it is handed (``TypeError``, a 500 for every token).
* **flask-cloudflare-login 0.7.5** (``get_token``, ``get_payload``, ``CfUser``): a Flask-Login user class, used
  through ``LoginManager.request_loader`` with ``@login_required`` on the view. Configured by the
  ``CF_TEAM_DOMAIN`` and ``CF_POLICY_AUD`` environment variables. It reads **only** the ``CF_Authorization``
  cookie, so its requests carry the token there. Its certs URL is ``https://<CF_TEAM_DOMAIN>/cdn-cgi/access/
  certs``, https only: the module's ``requests`` is given a ``get`` that sends exactly that URL to the loopback
  endpoint (a real HTTP request, every time it fetches) and refuses any other. It caches verified payloads by
  token (``TTLCache``, 128 tokens, 10 minutes, so a token stays accepted up to 10 minutes past its expiry) and
  **fetches the whole key set on every cache miss** (no key cache); it checks signature, audience and expiry,
  not the issuer, and takes the algorithm from the token's own header. Groups come from Cloudflare's identity
  endpoint (network): not asked for (``CfUser(email)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from flask import Flask, abort, g

from cfaccess_mw.testing import LocalIssuer

#: The peers: (PyPI name, import name).
PEERS = {"flask-cfaccess": "flask_cfaccess", "flask-cloudflare-login": "flask_cloudflare_login"}


def flask_cfaccess_app(issuer: LocalIssuer, find_user: Callable[[str], Any]) -> Flask:
    from flask_cfaccess import CfAccess
    from jwt import PyJWKClient

    app = Flask("flask_cfaccess_bench")
    app.config["CLOUDFLARE_ACCESS_AUD"] = issuer.audience
    app.config["CLOUDFLARE_ACCESS_TEAM"] = issuer.team_domain.split(".")[0]
    cfaccess = CfAccess(app)
    app.extensions["cfaccess"] = (cfaccess, PyJWKClient(issuer.certs_url))  # the loopback endpoint, same defaults

    @app.before_request
    def check_authentication() -> None:
        if not cfaccess.authenticate():
            abort(401)

    @app.get("/")
    def who() -> str:
        user = find_user(g._cfaccess_payload["email"])
        if user is None:
            abort(403)
        return str(user["name"])

    return app


class _LoopbackCerts:
    """Stands in for ``requests`` in flask_cloudflare_login.access: its https certs URL goes to the loopback one."""

    def __init__(self, certs_url: str, team_domain: str) -> None:
        import requests

        self._get = requests.get
        self.exceptions = requests.exceptions
        self._map = {f"https://{team_domain}/cdn-cgi/access/certs": certs_url}

    def get(self, url: str, **kwargs: Any) -> Any:
        if url not in self._map:
            raise RuntimeError(f"benchmark: flask-cloudflare-login asked for {url}, which is not served here")
        return self._get(self._map[url], timeout=5, **kwargs)


def flask_cloudflare_login_app(issuer: LocalIssuer, find_user: Callable[[str], Any]) -> Flask:
    from flask_cloudflare_login import access
    from flask_login import LoginManager, current_user, login_required

    os.environ.pop("CF_TEST_TOKEN", None)  # it would take this token instead of the request's
    os.environ["CF_TEAM_DOMAIN"] = issuer.team_domain
    os.environ["CF_POLICY_AUD"] = issuer.audience
    access.requests = _LoopbackCerts(issuer.certs_url, issuer.team_domain)  # type: ignore[attr-defined]

    app = Flask("flask_cloudflare_login_bench")
    login_manager = LoginManager(app)

    @login_manager.request_loader
    def load_user_from_request(request: Any) -> Any:
        token = access.get_token(request)
        payload = access.get_payload(token) if token else None
        return access.CfUser(payload["email"]) if payload else None

    @app.get("/")
    @login_required
    def who() -> str:
        user = find_user(current_user.id)
        if user is None:
            abort(403)
        return str(user["name"])

    return app


def flask_cloudflare_login_refiller() -> Callable[[], None]:
    """Before each pass over the fresh tokens: its payload cache full of other entries (every token a miss)."""
    from flask_cloudflare_login import access

    cache = access.get_payload.cache  # type: ignore[attr-defined]
    filler = {(f"filler-{i}",): {} for i in range(cache.maxsize)}

    def refill() -> None:
        cache.clear()
        for key, value in filler.items():
            cache[key] = value

    return refill


def available() -> dict[str, bool]:
    import importlib.util

    return {name: importlib.util.find_spec(module) is not None for name, module in PEERS.items()}
