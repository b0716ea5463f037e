"""Flask: the extension under Flask's test client (before the app's own hooks, through its error handling, static
files, require, audit), the WSGI middleware around a Flask app, and the example app live under ``flask run`` and
gunicorn."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask", reason="Flask is an optional extra: pip install 'cfaccess_mw[flask]'")

from flask import Blueprint, Flask, g, jsonify
from flask.testing import FlaskClient
from werkzeug.exceptions import HTTPException

from cfaccess_mw import ApiKey, AuditEvent, Authenticator, ConfigError, Forbidden, Principal, Reason, Settings
from cfaccess_mw.core.settings import ExposureMode
from cfaccess_mw.integrations.flask import CloudflareAccess, current_principal, get_principal, get_scopes, require
from cfaccess_mw.integrations.wsgi import CloudflareAccessWSGIMiddleware
from cfaccess_mw.testing import LocalIssuer
from examples import flask_app

from . import readme
from .conftest import REMOTE_PEER, find_user, jwt_header
from .live_examples import (
    EXAMPLE_API_KEY,
    EXAMPLE_CLIENT_ID,
    check_example_http,
    example_db,
    example_env,
    free_port,
    serve_command,
)
from .test_wsgi import error_of, gunicorn_argv

REMOTE = {"REMOTE_ADDR": REMOTE_PEER[0], "REMOTE_PORT": str(REMOTE_PEER[1])}


def client_of(app: Flask) -> FlaskClient:
    """Flask's test client, reporting a remote peer (its default REMOTE_ADDR is 127.0.0.1)."""
    client = app.test_client()
    client.environ_base.update(REMOTE)
    return client


def build(issuer: LocalIssuer, events: list[AuditEvent] | None = None, **overrides: Any) -> tuple[Flask, list[str]]:
    """A Flask app with the extension and hooks that record whether they ran; returns it and that record."""
    ran: list[str] = []
    options: dict[str, Any] = {"user_lookup": overrides.pop("user_lookup", find_user)}
    if events is not None:
        options["audit_hook"] = events.append
    if "extra_scopes" in overrides:
        options["extra_scopes"] = overrides.pop("extra_scopes")
    app = Flask(__name__, static_folder=overrides.pop("static_folder", None), static_url_path="/static")
    CloudflareAccess(app, issuer.settings(**overrides), **options)

    @app.url_value_preprocessor
    def load_from_url(endpoint: str | None, values: dict[str, Any] | None) -> None:
        ran.append("url_value_preprocessor")

    @app.before_request
    def before() -> None:
        ran.append("before_request")

    @app.after_request
    def stamp(response: Any) -> Any:
        response.headers["X-App-After-Request"] = "yes"
        return response

    @app.get("/")
    def who() -> dict[str, Any]:
        return {"kind": current_principal.kind, "who": current_principal.display_name, "scopes": get_scopes()}

    @app.get("/items/<int:item>")
    def item(item: int) -> dict[str, Any]:
        return {"item": item, "who": current_principal.display_name}

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/healthz/who")
    def healthz_who() -> str:
        return get_principal().display_name

    @app.get("/admin")
    @require("user", scopes=["admin"])
    def admin() -> str:
        return "admin area"

    @app.get("/machines")
    @require("service", "api_key")
    def machines() -> str:
        return "for machines"

    @app.get("/raises")
    def raises() -> str:
        raise Forbidden(Reason.INSUFFICIENT_SCOPE, "Not for you.", "view refused")

    return app, ran


def alice(issuer: LocalIssuer) -> dict[str, str]:
    return jwt_header(issuer.identity_token("alice@example.com"))


def roles(principal: Principal) -> list[str]:
    return [principal.user["role"]] if principal.kind == "user" else []


# --- the decision, before the app's own hooks --------------------------------------------------


def test_a_refused_request_runs_none_of_the_apps_hooks(shared_issuer: LocalIssuer) -> None:
    app, ran = build(shared_issuer)
    response = client_of(app).get("/items/7")
    assert response.status_code == 401
    assert error_of(response)["reason"] == "no_credentials"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cfaccess"'
    assert ran == []  # neither url_value_preprocessor nor before_request saw the unproven caller


def test_an_accepted_request_reaches_the_view_with_the_principal(shared_issuer: LocalIssuer) -> None:
    app, ran = build(shared_issuer)
    response = client_of(app).get("/items/7", headers=alice(shared_issuer))
    assert response.status_code == 200
    assert response.get_json() == {"item": 7, "who": "alice@example.com"}
    assert ran == ["url_value_preprocessor", "before_request"]


def test_current_principal_is_the_principal(shared_issuer: LocalIssuer) -> None:
    app, _ = build(shared_issuer)
    seen: list[object] = []

    @app.get("/identity")
    def identity() -> str:
        seen.append(get_principal())
        return current_principal.email or ""

    assert client_of(app).get("/identity", headers=alice(shared_issuer)).text == "alice@example.com"
    assert isinstance(seen[0], Principal)
    assert seen[0].user == {"name": "Alice", "role": "admin"}


def test_current_principal_reads_every_attribute_of_the_principal(shared_issuer: LocalIssuer) -> None:
    """The proxy's own properties (one per field and property of Principal) and the rest of the proxy agree with the
    principal itself; outside a request it raises as ``request`` does."""
    app, _ = build(shared_issuer)
    names = [field.name for field in dataclasses.fields(Principal)]
    names += [name for name, value in vars(Principal).items() if isinstance(value, property)]
    seen: dict[str, object] = {}

    @app.get("/identity")
    def identity() -> str:
        principal = get_principal()
        seen.update(same={name: getattr(current_principal, name) == getattr(principal, name) for name in names})
        seen.update(whole=(current_principal == principal, repr(current_principal) == repr(principal)))
        seen.update(kind=(isinstance(current_principal, Principal), bool(current_principal)))
        return ""

    assert client_of(app).get("/identity", headers=alice(shared_issuer)).status_code == 200
    assert seen == {"same": dict.fromkeys(names, True), "whole": (True, True), "kind": (True, True)}
    assert {"kind", "email", "user", "claims", "display_name", "identity", "scopes"} <= set(names)
    with pytest.raises(RuntimeError):
        current_principal.display_name  # noqa: B018


@pytest.mark.parametrize(
    ("make_headers", "status", "reason"),
    [
        (lambda issuer: jwt_header(issuer.identity_token("eve@example.com")), 403, "unknown_user"),
        (lambda issuer: jwt_header(issuer.identity_token("a@example.com", lifetime=-600)), 401, "token_expired"),
        (lambda issuer: jwt_header("not.a.token"), 401, "token_malformed"),
        (lambda issuer: {"Authorization": "Bearer wrong"}, 401, "api_key_invalid"),
    ],
    ids=["unknown-user", "expired", "malformed", "bad-api-key"],
)
def test_refusals_are_the_json_error_through_flasks_error_handling(
    shared_issuer: LocalIssuer, make_headers: Callable[[LocalIssuer], dict[str, str]], status: int, reason: str
) -> None:
    app, ran = build(shared_issuer)
    response = client_of(app).get("/items/1", headers=make_headers(shared_issuer))
    assert response.status_code == status
    assert error_of(response)["reason"] == reason
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-App-After-Request"] == "yes"  # the app's after_request ran on our answer
    assert ran == []


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "POST"])
def test_every_method_is_judged_alike(shared_issuer: LocalIssuer, method: str) -> None:
    app, _ = build(shared_issuer)
    response = client_of(app).open("/", method=method)
    assert response.status_code == 401
    if method == "HEAD":
        assert response.data == b""


def test_an_unknown_route_is_refused_not_revealed(shared_issuer: LocalIssuer) -> None:
    app, _ = build(shared_issuer)
    assert client_of(app).get("/no/such/page").status_code == 401
    assert client_of(app).get("/no/such/page", headers=alice(shared_issuer)).status_code == 404


def test_the_apps_403_and_exception_handlers_do_not_turn_ours_into_html(shared_issuer: LocalIssuer) -> None:
    app, _ = build(shared_issuer, extra_scopes=roles)

    @app.errorhandler(403)
    def forbidden_page(err: HTTPException) -> tuple[str, int]:
        return "<html>forbidden</html>", 403

    @app.errorhandler(401)
    def login_page(err: HTTPException) -> tuple[str, int]:
        return "<html>log in</html>", 401

    @app.errorhandler(HTTPException)
    def any_http(err: HTTPException) -> tuple[str, int]:
        return "<html>http error</html>", err.code or 500

    @app.errorhandler(Exception)
    def any_error(err: Exception) -> tuple[str, int]:
        return "<html>oops</html>", 500

    client = client_of(app)
    for response, status in (
        (client.get("/"), 401),
        (client.get("/", headers=jwt_header(shared_issuer.identity_token("eve@example.com"))), 403),
        (client.get("/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com"))), 403),
        (client.get("/raises", headers=alice(shared_issuer)), 403),
    ):
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json"
        assert set(error_of(response)) == {"code", "reason", "message"}


def test_a_blueprints_catch_all_handler_answers_but_the_view_never_runs(shared_issuer: LocalIssuer) -> None:
    """Flask asks a blueprint's handlers first: its catch-all writes the answer, and the request stays refused."""
    app, _ = build(shared_issuer)
    ran: list[str] = []
    blueprint = Blueprint("bp", __name__)

    @blueprint.get("/bp")
    def view() -> str:
        ran.append("view")
        return "secret"

    @blueprint.errorhandler(Exception)
    def catch_all(err: Exception) -> tuple[str, int]:
        return "blueprint says no", 500

    app.register_blueprint(blueprint)
    response = client_of(app).get("/bp")
    assert response.text == "blueprint says no"
    assert ran == []


# --- require, public paths, static files -------------------------------------------------------


def test_require_admits_by_kind_and_scope(shared_issuer: LocalIssuer, register_secret: Callable[[str], str]) -> None:
    key = register_secret("flask-operator-key-0123456789")
    app, _ = build(shared_issuer, extra_scopes=roles, api_keys={"operator": key})
    client = client_of(app)
    assert client.get("/admin", headers=alice(shared_issuer)).text == "admin area"
    bob = client.get("/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert bob.status_code == 403
    assert error_of(bob)["reason"] == "insufficient_scope"
    assert client.get("/machines", headers={"Authorization": f"Bearer {key}"}).text == "for machines"
    assert client.get("/machines", headers=alice(shared_issuer)).status_code == 403


def test_require_checks_its_declaration_at_import() -> None:
    with pytest.raises(ValueError, match="unknown principal kind"):
        require("robot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not one string"):
        require(scopes="admin")


def test_require_wraps_an_async_view(shared_issuer: LocalIssuer) -> None:
    pytest.importorskip("asgiref", reason="Flask runs async views with asgiref")
    app, _ = build(shared_issuer)

    @app.get("/async")
    @require("api_key")
    async def async_view() -> str:
        return "async"

    assert client_of(app).get("/async", headers=alice(shared_issuer)).status_code == 403


def test_public_paths_pass_and_the_principal_proxy_still_refuses(shared_issuer: LocalIssuer) -> None:
    app, _ = build(shared_issuer, public_paths=("/healthz",))
    client = client_of(app)
    assert client.get("/healthz").text == "ok"
    refused = client.get("/healthz/who")  # public, but the view asks for a caller there is not
    assert refused.status_code == 401
    assert error_of(refused)["reason"] == "no_credentials"
    assert client.get("/").status_code == 401


def test_static_files_are_protected_unless_public(shared_issuer: LocalIssuer, tmp_path: Path) -> None:
    (tmp_path / "app.css").write_text("body {}")
    app, _ = build(shared_issuer, static_folder=str(tmp_path))
    client = client_of(app)
    assert client.get("/static/app.css").status_code == 401
    assert client.get("/static/app.css", headers=alice(shared_issuer), buffered=True).text == "body {}"
    public, _ = build(shared_issuer, static_folder=str(tmp_path), public_paths=("/static",))
    assert client_of(public).get("/static/app.css", buffered=True).text == "body {}"


# --- failures, audit, configuration -------------------------------------------------------------


def test_an_error_of_our_own_while_deciding_is_503_never_500(shared_issuer: LocalIssuer) -> None:
    app, _ = build(shared_issuer)

    def bug(scope: Any) -> Principal:
        raise KeyError("a bug")

    app.extensions["cfaccess_mw"].authenticator.identify_sync = bug
    response = client_of(app).get("/", headers=alice(shared_issuer))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "internal_error"
    assert "Retry-After" in response.headers


def test_a_failing_lookup_is_503(shared_issuer: LocalIssuer) -> None:
    def broken(email: str) -> None:
        raise RuntimeError("database down")

    app, _ = build(shared_issuer, user_lookup=broken)
    response = client_of(app).get("/", headers=alice(shared_issuer))
    assert response.status_code == 503
    assert error_of(response)["reason"] == "user_lookup_failed"


def test_one_audit_event_per_request_with_flasks_status(shared_issuer: LocalIssuer) -> None:
    events: list[AuditEvent] = []
    app, _ = build(shared_issuer, events, extra_scopes=roles)
    client = client_of(app)
    client.get("/items/3", headers=alice(shared_issuer))
    client.get("/items/3")
    client.get("/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    client.get("/nowhere", headers=alice(shared_issuer))
    assert [(e.outcome, e.status, e.path, e.reason) for e in events] == [
        ("accepted", 200, "/items/3", None),
        ("refused", 401, "/items/3", "no_credentials"),
        ("refused", 403, "/admin", "insufficient_scope"),
        ("accepted", 404, "/nowhere", None),
    ]


def test_an_async_user_lookup_is_refused_at_init_app(shared_issuer: LocalIssuer) -> None:
    async def lookup(email: str) -> None:
        return None

    with pytest.raises(TypeError, match="user_lookup is an 'async def'"):
        CloudflareAccess(Flask(__name__), shared_issuer.settings(), user_lookup=lookup)


def test_settings_are_read_at_init_app_and_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFACCESS_EXPOSURE_MODE", "sideways")
    extension = CloudflareAccess()  # nothing read yet: a module-level extension imports cleanly
    with pytest.raises(ConfigError, match="CFACCESS_EXPOSURE_MODE"):
        extension.init_app(Flask(__name__))


def test_init_app_later_and_one_authenticator_for_two_apps(issuer: LocalIssuer) -> None:
    auth = Authenticator(issuer.settings(), user_lookup=find_user)
    with pytest.raises(TypeError, match="user_lookup"):
        CloudflareAccess(authenticator=auth, user_lookup=find_user)
    extension = CloudflareAccess(authenticator=auth)
    apps = [Flask("one"), Flask("two")]
    for app in apps:
        extension.init_app(app)
        app.add_url_rule("/", "who", lambda: current_principal.display_name)
    token = jwt_header(issuer.identity_token("bob@example.com"))
    assert [client_of(app).get("/", headers=token).text for app in apps] == ["bob@example.com"] * 2
    assert issuer.fetch_count == 1


def test_g_is_the_apps_own(shared_issuer: LocalIssuer) -> None:
    app, _ = build(shared_issuer)

    @app.get("/g")
    def names() -> Any:
        return jsonify(sorted(name for name in g if not name.startswith("_cfaccess")))

    assert client_of(app).get("/g", headers=alice(shared_issuer)).get_json() == []


def test_current_principal_works_behind_the_wsgi_middleware(shared_issuer: LocalIssuer) -> None:
    app = Flask(__name__)
    app.add_url_rule("/", "who", lambda: {"who": current_principal.display_name, "scopes": get_scopes()})
    app.wsgi_app = CloudflareAccessWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, shared_issuer.settings(), user_lookup=find_user
    )
    client = client_of(app)
    assert client.get("/").status_code == 401
    assert client.get("/", headers=alice(shared_issuer)).get_json() == {
        "who": "alice@example.com",
        "scopes": ["authenticated", "user"],
    }


# --- the example app, in-process and live -------------------------------------------------------


def example_settings(issuer: LocalIssuer) -> Settings:
    return issuer.settings(
        api_keys=(ApiKey.from_secret("operator", EXAMPLE_API_KEY),),
        service_tokens={"ci": EXAMPLE_CLIENT_ID},
        public_paths=("/healthz",),
    )


def test_the_example_under_flasks_test_client(shared_issuer: LocalIssuer, tmp_path: Path) -> None:
    client = client_of(flask_app.create_app(example_settings(shared_issuer), str(example_db(tmp_path))))
    me = client.get("/api/me", headers=alice(shared_issuer))
    assert me.get_json() == {"kind": "user", "display_name": "alice@example.com", "name": "Alice", "role": "admin"}
    bob = client.get("/api/admin", headers=jwt_header(shared_issuer.identity_token("bob@example.com")))
    assert error_of(bob)["reason"] == "insufficient_scope"


def test_the_example_under_flask_run(issuer: LocalIssuer, tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "flask", "--app", "examples.flask_app:create_app", "run"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-reload", "--no-debugger"]
    with serve_command(argv, port, example_env(issuer, example_db(tmp_path)), "/healthz") as base:
        check_example_http(base, issuer)
    assert issuer.fetch_count == 1


@pytest.mark.parametrize("worker", ["sync", "gthread", "gthread-preload"])
def test_the_example_under_gunicorn(issuer: LocalIssuer, tmp_path: Path, worker: str) -> None:
    port = free_port()
    argv = gunicorn_argv("examples.flask_app:create_app()", port, worker)
    with serve_command(argv, port, example_env(issuer, example_db(tmp_path)), "/healthz") as base:
        check_example_http(base, issuer)
    assert issuer.fetch_count == 1


def test_the_docs_flask_block_works_as_written(issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in issuer.env().items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__name__": "docs_flask_app"}
    exec(readme.block_starting("# flask_app.py\n"), namespace)  # docs/frameworks/flask.md
    client = client_of(namespace["app"])
    bob = jwt_header(issuer.identity_token("bob@example.com"))
    assert client.get("/api/me").status_code == 401
    me = client.get("/api/me", headers=alice(issuer))
    assert me.get_json() == {"who": "alice@example.com", "kind": "user"}
    assert client.get("/api/admin", headers=alice(issuer)).get_json() == {"ok": True}
    assert error_of(client.get("/api/admin", headers=bob))["reason"] == "insufficient_scope"
    assert issuer.fetch_count == 1


def test_local_mode_behind_proxy_fix_still_refuses_a_forged_forwarded_for(shared_issuer: LocalIssuer) -> None:
    """Werkzeug's ProxyFix rewrites REMOTE_ADDR from X-Forwarded-For before Flask (and this extension) runs; the
    header it believed stays in the environ, and a forwarding header takes local trust away."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    app, _ = build(shared_issuer, exposure_mode=ExposureMode.LOCAL)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    client = client_of(app)
    forged = client.get("/", headers={"Host": "localhost:8000", "X-Forwarded-For": "127.0.0.1"})
    assert forged.status_code == 401
    client.environ_base.update(REMOTE_ADDR="127.0.0.1")
    operator = client.get("/", headers={"Host": "localhost:8000"})
    assert operator.get_json()["kind"] == "local"
