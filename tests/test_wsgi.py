"""The WSGI middleware: the environ read as a scope (a table), every decision under Werkzeug's test client and
wsgiref's PEP 3333 validator, a real wsgiref server, and the example app under gunicorn's sync and gthread
workers, with a 32-thread burst on a cold key cache."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import wsgiref.simple_server
import wsgiref.validate
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

from cfaccess_mw import (
    ApiKey,
    AuditEvent,
    Authenticator,
    AuthError,
    ConfigError,
    Forbidden,
    Principal,
    Reason,
    Settings,
)
from cfaccess_mw.core.settings import ExposureMode
from cfaccess_mw.integrations.wsgi import (
    PRINCIPAL_KEY,
    SCOPES_KEY,
    CloudflareAccessWSGIMiddleware,
    decide,
    decision_headers,
    wsgi_scope,
)
from cfaccess_mw.testing import LocalIssuer
from cfaccess_mw.testing.presets import AlbIssuer, GoogleIapIssuer, OidcIssuer, PomeriumIssuer
from examples import wsgi_app

from .conftest import REMOTE_PEER, find_user, jwt_header
from .live_examples import (
    EXAMPLE_API_KEY,
    check_example_http,
    example_db,
    example_env,
    free_port,
    serve_command,
)
from .live_servers import serve_socketserver

API_KEY = "wsgi-operator-key-0123456789"
REMOTE = {"REMOTE_ADDR": REMOTE_PEER[0], "REMOTE_PORT": str(REMOTE_PEER[1])}
LOOPBACK = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51000"}

# --- the environ, read as a scope ---------------------------------------------------------------

BASE_ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "wsgi.url_scheme": "http",
}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "4242"},
            {"client": ("203.0.113.7", 4242)},
            id="client-is-the-socket-peer",
        ),
        pytest.param(
            {"REMOTE_ADDR": "203.0.113.7", "HTTP_X_FORWARDED_FOR": "127.0.0.1"},
            {"client": ("203.0.113.7", 0)},
            id="forwarded-for-never-the-client",
        ),
        pytest.param({"REMOTE_ADDR": ""}, {"client": None}, id="unix-socket-no-peer"),
        pytest.param({"REMOTE_ADDR": "::1", "REMOTE_PORT": "x"}, {"client": ("::1", 0)}, id="odd-port-is-0"),
        pytest.param(
            {"SCRIPT_NAME": "/app", "PATH_INFO": "/healthz"},
            {"path": "/app/healthz", "root_path": "/app", "raw_path": b"/app/healthz"},
            id="mount-prefix",
        ),
        pytest.param(
            {"PATH_INFO": "/caf\xc3\xa9"}, {"path": "/café", "raw_path": b"/caf%C3%A9"}, id="latin-1-is-utf-8"
        ),
        pytest.param({"PATH_INFO": "/\xff"}, {"path": "/\ufffd"}, id="not-utf-8-replaced-as-werkzeug-does"),
        pytest.param(
            {"PATH_INFO": "/a/b", "RAW_URI": "/a%2Fb?x=1"},
            {"path": "/a/b", "raw_path": b"/a%2Fb"},
            id="raw-uri-gunicorn",
        ),
        pytest.param({"PATH_INFO": "/a", "REQUEST_URI": "/a?x=1"}, {"raw_path": b"/a"}, id="request-uri-uwsgi"),
        pytest.param(
            {"PATH_INFO": "/a", "RAW_URI": "http://example.com/a?x"}, {"raw_path": b"/a"}, id="absolute-form-target"
        ),
        pytest.param({"PATH_INFO": ""}, {"path": "/"}, id="empty-path-is-root"),
        pytest.param({"QUERY_STRING": "a=1&b=\xe9"}, {"query_string": b"a=1&b=\xe9"}, id="query-bytes"),
        pytest.param({"REQUEST_METHOD": "head"}, {"method": "HEAD"}, id="method-upper"),
        pytest.param(
            {"wsgi.url_scheme": "https", "SERVER_PORT": "443"},
            {"scheme": "https", "server": ("127.0.0.1", 443)},
            id="scheme-and-server",
        ),
    ],
)
def test_the_environ_reads_as_a_scope(environ: dict[str, Any], expected: dict[str, Any]) -> None:
    scope = wsgi_scope({**BASE_ENVIRON, **environ})
    assert scope["type"] == "http"
    assert {key: scope[key] for key in expected} == expected


def test_headers_come_back_from_http_and_content_variables() -> None:
    scope = wsgi_scope(
        {
            **BASE_ENVIRON,
            "HTTP_CF_ACCESS_JWT_ASSERTION": "a.b.c",
            "HTTP_HOST": "localhost:8000",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": "2",
            "wsgi.input": object(),
            "REMOTE_USER": "mallory",  # a server variable, not a header: never read as one
        }
    )
    assert sorted(scope["headers"]) == [
        (b"cf-access-jwt-assertion", b"a.b.c"),
        (b"content-length", b"2"),
        (b"content-type", b"application/json"),
        (b"host", b"localhost:8000"),
    ]


def test_an_empty_environ_still_reads() -> None:
    scope = wsgi_scope({})
    assert (scope["method"], scope["path"], scope["client"], scope["headers"]) == ("GET", "/", None, [])


def test_the_scope_reads_each_field_when_asked_and_the_whole_of_it_when_looked_at_whole() -> None:
    environ = {**BASE_ENVIRON, "SCRIPT_NAME": "/app", "PATH_INFO": "/x", "QUERY_STRING": "q=1", **REMOTE}
    eager = {
        "type": "http",
        "headers": [],
        "method": "GET",
        "scheme": "http",
        "path": "/app/x",
        "raw_path": b"/app/x",
        "root_path": "/app",
        "query_string": b"q=1",
        "client": REMOTE_PEER,
        "server": ("127.0.0.1", 8000),
    }
    fields = [key for key in eager if key not in ("type", "headers")]
    for key in fields:  # each field alone, through [] and through get, as the decision and the audit read them
        assert wsgi_scope(environ)[key] == eager[key], key
        assert wsgi_scope(environ).get(key) == eager[key], key
        assert key in wsgi_scope(environ), key
    for whole in (dict, lambda scope: {**scope}, lambda scope: dict(scope.items()), lambda scope: scope.copy()):
        assert whole(wsgi_scope(environ)) == eager
    scope = wsgi_scope(environ)
    assert (scope == eager, len(wsgi_scope(environ)), sorted(wsgi_scope(environ))) == (True, 10, sorted(eager))
    assert wsgi_scope(environ).get("user", "absent") == "absent"
    assert "user" not in wsgi_scope(environ)
    with pytest.raises(KeyError):
        wsgi_scope(environ)["user"]


def decision(auth: Authenticator, scope: Any) -> tuple[str, str]:
    """What the decision makes of a scope: ``("accepted", who)``, ``("public", "")`` or ``("refused", reason)``."""
    try:
        decided = decide(auth, scope)
    except AuthError as err:
        return "refused", f"{err.status_code} {err.reason.value}"
    if decided is None:
        return "public", ""
    principal, scopes = decided
    return "accepted", f"{principal.identity} {scopes}"


PRESETS: dict[str, Callable[[], Any]] = {
    "cloudflare": LocalIssuer,
    "google-iap": GoogleIapIssuer,
    "pomerium": PomeriumIssuer,
    "aws-alb": AlbIssuer,
    "oidc": OidcIssuer,
}


@pytest.mark.parametrize("preset", PRESETS)
def test_the_headers_the_decision_reads_decide_as_all_of_them_would(preset: str) -> None:
    """Outside local mode only the token header, Authorization and (when allowed) Cookie are read from the
    environ (:func:`decision_headers`): every request here is decided from those and from every header, alike."""
    with PRESETS[preset]() as issuer:
        token = issuer.identity_token("alice@example.com")
        other = "HTTP_X_GOOG_IAP_JWT_ASSERTION" if preset != "google-iap" else "HTTP_CF_ACCESS_JWT_ASSERTION"
        header = "HTTP_" + issuer.request_headers(token).popitem()[0].upper().replace("-", "_")
        noise = {"HTTP_HOST": "localhost", "HTTP_ORIGIN": "http://localhost", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}
        rows: dict[str, dict[str, str]] = {
            "token": {header: issuer.request_headers(token).popitem()[1]},
            "token-and-noise": {header: issuer.request_headers(token).popitem()[1], **noise},
            "token-in-another-presets-header": {other: token},
            "cookie": {"HTTP_COOKIE": f"a=1; CF_Authorization={token}"},
            "token-and-cookie": {
                header: issuer.request_headers(token).popitem()[1],
                "HTTP_COOKIE": "CF_Authorization=x",
            },
            "api-key": {"HTTP_AUTHORIZATION": f"Bearer {API_KEY}"},
            "wrong-api-key": {"HTTP_AUTHORIZATION": "Bearer wrong"},
            "bearer-token": {"HTTP_AUTHORIZATION": f"Bearer {token}"},
            "garbage": {header: "e30.e30.c2ln"},
            "nothing": noise,
        }
        for allow_cookie in (False, True) if preset == "cloudflare" else (False,):  # the cookie is Cloudflare's
            settings = issuer.settings(allow_cookie=allow_cookie, api_keys=(ApiKey.from_secret("operator", API_KEY),))
            auth = Authenticator(settings, user_lookup=find_user)
            auth.startup_sync()
            keys = decision_headers(auth)
            assert keys is not None
            for name, headers in rows.items():
                environ = {**BASE_ENVIRON, **LOOPBACK, **headers}
                assert decision(auth, wsgi_scope(environ, keys)) == decision(auth, wsgi_scope(environ)), (
                    name,
                    allow_cookie,
                )
            assert decision(auth, wsgi_scope({**BASE_ENVIRON, **rows["token"]}, keys))[0] == "accepted"
            assert decision(auth, wsgi_scope({**BASE_ENVIRON, **rows["api-key"]}, keys))[0] == "accepted"
            cookie = decision(auth, wsgi_scope({**BASE_ENVIRON, **rows["cookie"]}, keys))[0]
            assert cookie == ("accepted" if allow_cookie else "refused")


def test_local_mode_reads_every_header(shared_issuer: LocalIssuer) -> None:
    """Local mode judges Host, Origin, Sec-Fetch-Site and every proxy header: none may be left out."""
    auth = Authenticator(shared_issuer.settings(exposure_mode=ExposureMode.LOCAL), user_lookup=find_user)
    assert decision_headers(auth) is None
    proxied = {**BASE_ENVIRON, **LOOPBACK, "HTTP_HOST": "localhost:8000", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    assert decision(auth, wsgi_scope(proxied, decision_headers(auth))) == ("refused", "401 no_credentials")
    assert decision(auth, wsgi_scope({**proxied, "HTTP_X_FORWARDED_FOR": ""}))[0] == "refused"
    del proxied["HTTP_X_FORWARDED_FOR"]
    assert decision(auth, wsgi_scope(proxied, decision_headers(auth)))[0] == "accepted"


# --- the middleware under Werkzeug's test client -----------------------------------------------

Events = list[AuditEvent]


class BufferedClient(Client):
    """Werkzeug's test client reading each answer whole and closing the app's iterable, as a server does
    (wsgiref's validator fails a test whose iterable is never closed)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def error_of(response: Any) -> dict[str, str]:
    """The ``error`` object of a refusal, checking the shape every refusal shares."""
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "reason", "message"}
    return dict(body["error"])


def report(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The test app: reports the caller it was given (or raises what ``/raise`` asks for)."""
    if environ["PATH_INFO"] == "/forbidden-by-app":
        raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Not for you.", "app refused")
    if environ["PATH_INFO"] == "/broken":
        raise RuntimeError("the app's own bug")
    principal = environ[PRINCIPAL_KEY]
    body = repr((principal.kind, principal.display_name) if principal else None).encode()
    start_response("201 Created", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def make(issuer: LocalIssuer, events: Events | None = None, **overrides: Any) -> Client:
    options: dict[str, Any] = {"user_lookup": find_user}
    if events is not None:
        options["audit_hook"] = events.append
    for name in ("user_lookup", "extra_scopes", "authenticator"):
        if name in overrides:
            options[name] = overrides.pop(name)
    settings = None if "authenticator" in options else issuer.settings(**overrides)
    middleware = CloudflareAccessWSGIMiddleware(wsgiref.validate.validator(report), settings, **options)
    # wsgiref's validator checks both sides of PEP 3333: what the server gives and what the middleware answers.
    return BufferedClient(wsgiref.validate.validator(middleware))


def get(client: Client, path: str = "/", *, environ: dict[str, str] = REMOTE, **kwargs: Any) -> Any:
    return client.get(path, environ_base=environ, **kwargs)


def test_no_credentials_is_refused_with_the_json_error_and_a_challenge(shared_issuer: LocalIssuer) -> None:
    response = get(make(shared_issuer))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cfaccess"'
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert error_of(response)["reason"] == "no_credentials"


def test_a_user_token_reaches_the_app_as_the_principal(shared_issuer: LocalIssuer) -> None:
    response = get(make(shared_issuer), headers=jwt_header(shared_issuer.identity_token("Alice@Example.com")))
    assert response.status_code == 201
    assert response.text == "('user', 'alice@example.com')"


@pytest.mark.parametrize(
    ("make_token", "status", "reason"),
    [
        (lambda issuer: issuer.identity_token("eve@example.com"), 403, "unknown_user"),
        (lambda issuer: issuer.identity_token("alice@example.com", lifetime=-600), 401, "token_expired"),
        (lambda issuer: issuer.identity_token("alice@example.com", aud=["another-app"]), 401, "audience_mismatch"),
        (lambda issuer: issuer.service_token("not-listed.access"), 403, "service_token_not_allowed"),
        (lambda issuer: "not.a.token", 401, "token_malformed"),
    ],
    ids=["unknown-user", "expired", "wrong-audience", "unlisted-service", "malformed"],
)
def test_every_refusal_of_a_token_is_the_json_error(
    shared_issuer: LocalIssuer, make_token: Callable[[LocalIssuer], str], status: int, reason: str
) -> None:
    response = get(make(shared_issuer), headers=jwt_header(make_token(shared_issuer)))
    assert response.status_code == status
    assert error_of(response)["reason"] == reason
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="cfaccess", error="invalid_token"'


def test_a_token_header_sent_twice_is_refused(shared_issuer: LocalIssuer) -> None:
    # A WSGI server joins a repeated header with a comma; the joined value is no token.
    token = shared_issuer.identity_token("alice@example.com")
    response = get(make(shared_issuer), headers=[("Cf-Access-Jwt-Assertion", token)] * 2)
    assert response.status_code == 401


def test_api_keys_and_service_tokens(shared_issuer: LocalIssuer, register_secret: Callable[[str], str]) -> None:
    client = make(shared_issuer, api_keys={"operator": register_secret(API_KEY)}, service_tokens={"ci": "ci.access"})
    assert get(client, headers={"Authorization": f"Bearer {API_KEY}"}).text == "('api_key', 'operator')"
    assert get(client, headers=jwt_header(shared_issuer.service_token("ci.access"))).text == "('service', 'ci')"
    wrong = get(client, headers={"Authorization": "Bearer wrong-key"})
    assert wrong.status_code == 401
    assert error_of(wrong)["reason"] == "api_key_invalid"


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "POST", "DELETE"])
def test_every_method_is_judged_alike(shared_issuer: LocalIssuer, method: str) -> None:
    response = make(shared_issuer).open("/", method=method, environ_base=REMOTE)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cfaccess"'
    if method == "HEAD":
        assert response.data == b""
        assert int(response.headers["Content-Length"]) > 0  # what a GET would carry


def test_public_paths_pass_without_a_principal_and_only_they(shared_issuer: LocalIssuer) -> None:
    client = make(shared_issuer, public_paths=("/healthz",))
    assert get(client, "/healthz").status_code == 201
    assert get(client, "/healthz").text == "None"
    assert get(client, "/healthz/live").status_code == 201
    assert get(client, "/healthzz").status_code == 401
    assert get(client, "/healthz/../admin").status_code == 401


def test_a_public_path_is_judged_below_the_mount_prefix(shared_issuer: LocalIssuer) -> None:
    client = make(shared_issuer, public_paths=("/healthz",))
    mounted = {**REMOTE, "SCRIPT_NAME": "/app"}
    assert client.get("/healthz", environ_base=mounted).status_code == 201
    assert client.get("/app/healthz", environ_base={**REMOTE, "SCRIPT_NAME": ""}).status_code == 401


@pytest.mark.parametrize(
    ("environ", "headers", "status"),
    [
        (LOOPBACK, {"Host": "localhost:8000"}, 201),
        (REMOTE, {"Host": "localhost:8000"}, 401),
        (LOOPBACK, {"Host": "attacker.example"}, 401),
        (LOOPBACK, {"Host": "localhost:8000", "X-Forwarded-For": "203.0.113.9"}, 401),
        ({"REMOTE_ADDR": ""}, {"Host": "localhost:8000"}, 401),
    ],
    ids=["loopback-operator", "remote-peer", "rebinding-host", "through-a-proxy", "no-peer"],
)
def test_local_mode_trusts_only_a_loopback_remote_addr(
    shared_issuer: LocalIssuer, environ: dict[str, str], headers: dict[str, str], status: int
) -> None:
    client = make(shared_issuer, exposure_mode=ExposureMode.LOCAL)
    response = client.get("/", environ_base=environ, headers=headers)
    assert response.status_code == status
    if status == 201:
        assert response.text == "('local', 'local')"


def test_reverse_proxy_mode_gives_loopback_nothing(shared_issuer: LocalIssuer) -> None:
    response = make(shared_issuer).get("/", environ_base=LOOPBACK, headers={"Host": "localhost:8000"})
    assert response.status_code == 401


def test_no_keys_is_503_with_retry_after(issuer: LocalIssuer) -> None:
    settings = issuer.settings()
    issuer.stop()
    client = BufferedClient(CloudflareAccessWSGIMiddleware(report, settings, user_lookup=find_user))
    response = get(client, headers=jwt_header(issuer.identity_token("alice@example.com")))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert error_of(response)["reason"] == "keys_unavailable"


def test_a_failing_lookup_is_503_never_500(shared_issuer: LocalIssuer) -> None:
    def broken(email: str) -> None:
        raise RuntimeError("database down")

    response = get(make(shared_issuer, user_lookup=broken), headers=jwt_header(shared_issuer.identity_token("a@b.c")))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"


def test_an_error_of_our_own_while_deciding_is_503_never_500(shared_issuer: LocalIssuer) -> None:
    middleware = CloudflareAccessWSGIMiddleware(report, shared_issuer.settings(), user_lookup=find_user)

    def bug(scope: Any) -> Principal:
        raise KeyError("a bug")

    middleware.authenticator.identify_sync = bug  # type: ignore[method-assign,assignment]
    response = get(BufferedClient(middleware), headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "internal_error"


def test_the_principal_and_scopes_are_in_the_environ(shared_issuer: LocalIssuer) -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.update(principal=environ[PRINCIPAL_KEY], scopes=environ[SCOPES_KEY])
        start_response("204 No Content", [])
        return []

    middleware = CloudflareAccessWSGIMiddleware(
        app, shared_issuer.settings(), user_lookup=find_user, extra_scopes=lambda p: ["admin"]
    )
    get(BufferedClient(middleware), headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert isinstance(seen["principal"], Principal)
    assert seen["principal"].user == {"name": "Bob", "role": "member"}
    assert seen["scopes"] == ["authenticated", "user", "admin"]


def test_audit_events_carry_the_apps_status_and_each_refusal(shared_issuer: LocalIssuer) -> None:
    events: Events = []
    client = make(shared_issuer, events)
    get(client, headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    get(client, "/nothing")
    get(client, "/forbidden-by-app", headers=jwt_header(shared_issuer.identity_token("alice@example.com")))
    assert [(e.outcome, e.status, e.path, e.reason) for e in events] == [
        ("accepted", 201, "/", None),
        ("refused", 401, "/nothing", "no_credentials"),
        ("refused", 403, "/forbidden-by-app", "insufficient_scope"),
    ]
    assert events[0].client == f"{REMOTE_PEER[0]}:{REMOTE_PEER[1]}"


def test_the_audit_records_the_peer_the_decision_saw_whatever_the_app_rewrites(shared_issuer: LocalIssuer) -> None:
    """The scope is read from the environ lazily; the app runs between the decision and the acceptance's audit,
    and an app may rewrite the environ in place: werkzeug's ProxyFix inside the middleware sets REMOTE_ADDR from
    X-Forwarded-For, which the client chooses. The audit's ``client`` is the socket peer (PEP 3333's
    REMOTE_ADDR as the server gave it), as an eagerly built scope recorded it, not a forgeable header."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    events: Events = []
    middleware = CloudflareAccessWSGIMiddleware(
        ProxyFix(report, x_for=1), shared_issuer.settings(), user_lookup=find_user, audit_hook=events.append
    )
    headers = {**jwt_header(shared_issuer.identity_token("alice@example.com")), "X-Forwarded-For": "198.51.100.66"}
    assert get(BufferedClient(middleware), headers=headers).status_code == 201
    assert [(e.outcome, e.client) for e in events] == [("accepted", f"{REMOTE_PEER[0]}:{REMOTE_PEER[1]}")]


def test_an_auth_error_raised_by_the_app_is_our_json_refusal(shared_issuer: LocalIssuer) -> None:
    response = get(make(shared_issuer), "/forbidden-by-app", headers=jwt_header(shared_issuer.identity_token("a@b.c")))
    assert response.status_code == 403  # a@b.c is unknown: refused by the middleware first
    response = get(
        make(shared_issuer), "/forbidden-by-app", headers=jwt_header(shared_issuer.identity_token("alice@example.com"))
    )
    assert response.status_code == 403
    assert error_of(response)["reason"] == "insufficient_scope"


def test_the_apps_own_error_is_the_apps_and_audited(shared_issuer: LocalIssuer) -> None:
    events: Events = []
    middleware = CloudflareAccessWSGIMiddleware(
        report, shared_issuer.settings(), user_lookup=find_user, audit_hook=events.append
    )
    with pytest.raises(RuntimeError, match="the app's own bug"):
        get(
            BufferedClient(middleware), "/broken", headers=jwt_header(shared_issuer.identity_token("alice@example.com"))
        )
    assert [(e.outcome, e.status) for e in events] == [("accepted", None)]


def test_an_async_user_lookup_is_refused_when_built(shared_issuer: LocalIssuer) -> None:
    async def lookup(email: str) -> None:
        return None

    with pytest.raises(TypeError, match="user_lookup is an 'async def'"):
        CloudflareAccessWSGIMiddleware(report, shared_issuer.settings(), user_lookup=lookup)


def test_an_async_audit_hook_is_refused_when_built(shared_issuer: LocalIssuer) -> None:
    async def hook(event: AuditEvent) -> None:
        return None

    with pytest.raises(TypeError, match="audit_hook is an 'async def'"):
        CloudflareAccessWSGIMiddleware(report, shared_issuer.settings(), audit_hook=hook)


def test_a_bad_variable_stops_the_app_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFACCESS_EXPOSURE_MODE", "sideways")
    with pytest.raises(ConfigError, match="CFACCESS_EXPOSURE_MODE"):
        CloudflareAccessWSGIMiddleware(report)


def test_an_authenticator_excludes_the_other_options(shared_issuer: LocalIssuer) -> None:
    auth = Authenticator(shared_issuer.settings(), user_lookup=find_user)
    with pytest.raises(TypeError, match="user_lookup"):
        CloudflareAccessWSGIMiddleware(report, authenticator=auth, user_lookup=find_user)
    shared = BufferedClient(CloudflareAccessWSGIMiddleware(report, authenticator=auth))
    assert get(shared, headers=jwt_header(shared_issuer.identity_token("bob@example.com"))).status_code == 201


def test_keys_are_fetched_when_the_middleware_is_built(issuer: LocalIssuer) -> None:
    CloudflareAccessWSGIMiddleware(report, issuer.settings(), user_lookup=find_user)
    assert issuer.fetch_count == 1


# --- real servers ------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_wsgiref(app: Any) -> Iterator[str]:
    """``app`` under wsgiref's threaded-less reference server on 127.0.0.1, in a thread, stopped after."""

    class Quiet(wsgiref.simple_server.WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

    with serve_socketserver(wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=Quiet), 60) as base:
        yield base


def example_settings(issuer: LocalIssuer) -> Settings:
    return issuer.settings(
        api_keys=(ApiKey.from_secret("operator", EXAMPLE_API_KEY),),
        service_tokens={"ci": "0123abcd.access"},
        public_paths=("/healthz",),
    )


def test_the_example_under_wsgiref(issuer: LocalIssuer, tmp_path: Path) -> None:
    app = wsgi_app.create_app(example_settings(issuer), str(example_db(tmp_path)))
    with serve_wsgiref(wsgiref.validate.validator(app)) as base:
        check_example_http(base, issuer)


def gunicorn_argv(target: str, port: int, worker: str) -> list[str]:
    """gunicorn serving ``target`` on 127.0.0.1 with one ``worker`` (``sync``, ``gthread``, or ``gthread-preload``:
    the app built in the master before the fork, keys fetched there, requests served in the forked worker)."""
    import sys

    worker, _, preload = worker.partition("-")
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    argv += ["--worker-class", worker, "--graceful-timeout", "2", "--log-level", "warning"]
    if preload:
        argv.append("--preload")
    if worker == "gthread":
        argv += ["--threads", "32"]
    return [*argv, target]


@pytest.mark.parametrize("worker", ["sync", "gthread", "gthread-preload"])
def test_the_example_under_gunicorn(issuer: LocalIssuer, tmp_path: Path, worker: str) -> None:
    port = free_port()
    env = example_env(issuer, example_db(tmp_path))
    with serve_command(gunicorn_argv("examples.wsgi_app:create_app()", port, worker), port, env, "/healthz") as base:
        check_example_http(base, issuer)
    assert issuer.fetch_count == 1  # at start-up, in the worker; every request after found the keys


EMAIL = "alice@example.com"


def burst(base: str, issuer: LocalIssuer, path: str, threads: int = 32, kids: list[str] | None = None) -> list[int]:
    """``threads`` requests with fresh tokens (signed with ``kids``, one each), released together; their statuses."""
    if kids is not None:
        threads = len(kids)
    tokens = [issuer.identity_token(EMAIL, kid=kids[i] if kids else None) for i in range(threads)]
    start = threading.Barrier(threads)
    statuses: list[int] = [0] * threads

    def one(index: int) -> None:
        start.wait(timeout=20)
        with httpx.Client(timeout=20) as http:
            statuses[index] = http.get(base + path, headers=jwt_header(tokens[index])).status_code

    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=40)
    assert not any(worker.is_alive() for worker in workers), "a request hung"
    return statuses


@pytest.mark.parametrize("target", ["examples.wsgi_app:create_app()", "examples.flask_app:create_app()"])
def test_a_cold_burst_of_32_threads_under_gthread_makes_one_fetch(
    issuer: LocalIssuer, tmp_path: Path, target: str
) -> None:
    """The certs endpoint is down at start-up (so the cache is cold), then back: 32 concurrent first requests
    wait for one fetch, and none hangs or is refused."""
    port = free_port()
    env = example_env(issuer, example_db(tmp_path))
    issuer.stop()
    with serve_command(gunicorn_argv(target, port, "gthread"), port, env, "/healthz") as base:
        issuer.start()
        statuses = burst(base, issuer, "/api/me")
    assert statuses == [200] * 32
    assert issuer.fetch_count == 1


@pytest.mark.parametrize("target", ["examples.wsgi_app:create_app()", "examples.flask_app:create_app()"])
def test_a_rotation_mid_burst_with_a_slow_then_down_certs_endpoint(
    issuer: LocalIssuer, tmp_path: Path, target: str
) -> None:
    """Under gthread: a key rotated while 32 threads arrive, half with the old key's tokens and half with the new
    key's, while the certs endpoint is slow: one fetch, no refusal. Then the endpoint goes down: the known keys
    still verify, and a key it never served is a 503 at once, not a hang."""
    port = free_port()
    env = example_env(issuer, example_db(tmp_path))
    with serve_command(gunicorn_argv(target, port, "gthread"), port, env, "/healthz") as base:
        old_kid = issuer.signing_kid
        assert burst(base, issuer, "/api/me", threads=4) == [200] * 4
        assert issuer.fetch_count == 1
        new_kid = issuer.rotate()

        def slow() -> tuple[int, dict[str, str], bytes]:
            time.sleep(1.0)
            return 200, {"Content-Type": "application/json"}, json.dumps(issuer.certs_document()).encode()

        issuer.responder = slow
        kids = [old_kid if i % 2 else new_kid for i in range(32)]
        assert burst(base, issuer, "/api/me", kids=kids) == [200] * 32
        assert issuer.fetch_count == 2

        issuer.stop()
        assert burst(base, issuer, "/api/me", threads=4, kids=[old_kid, new_kid] * 2) == [200] * 4
        unseen = issuer.rotate()
        with httpx.Client(timeout=20) as http:
            refused = http.get(f"{base}/api/me", headers=jwt_header(issuer.identity_token(EMAIL, kid=unseen)))
        assert refused.status_code == 503
        assert refused.json()["error"]["reason"] == "keys_unavailable"
