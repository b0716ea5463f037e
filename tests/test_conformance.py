"""The adapter conformance kit: every integration, the same cases (issue 18).

The rule the cases encode: authentication is decided on exactly the request the
framework will dispatch, before any of the app's code for that request runs, and
everything the framework serves (static files, mounts, fallbacks) is protected unless
its path is in ``CFACCESS_PUBLIC_PATHS``. Refusals, wherever they are raised (the
handler, a dependency or guard, a mounted sub-application), are this package's JSON
401/403, never a 500, and each request yields exactly one audit event naming the path
as requested.

Each integration is built by its factory in ``tests/conformance_apps.py`` (the same app
in the framework's own idiom) and driven twice: in process through the framework's own
test client, and live under uvicorn (a WSGI app under Werkzeug's threaded server), where
the path cases are sent byte for byte on a socket (test clients normalise ``..`` and
``//`` away). A case a framework cannot have is skipped with the factory's reason; a new
adapter adds its factory and gets all of it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from cfaccess_mw import AuditEvent
from cfaccess_mw.testing import LocalIssuer

from .conformance_apps import API_KEY, FACTORIES, SECRET, Answer, Built, Call, settings_for
from .live_servers import serve_hypercorn, serve_uvicorn, serve_werkzeug

KEY = {"Authorization": f"Bearer {API_KEY}"}
pytestmark = pytest.mark.usefixtures("falcons_loop")  # Falcon's sync TestClient before 3.11


@pytest.fixture(autouse=True)
def _sanic_test_mode() -> Iterator[None]:
    """Sanic refuses a second app of a name in a process unless in test mode (the factory's names are unique)."""
    sanic = pytest.importorskip("sanic").Sanic
    mode = sanic.test_mode
    sanic.test_mode = True
    yield
    sanic.test_mode = mode


class Kit:
    """One integration built once for the module: its app, its own test client, its audit events."""

    def __init__(self, name: str, built: Built, call: Call, events: list[AuditEvent]) -> None:
        self.name = name
        self.built = built
        self.call = call
        self.events = events

    def skip_unless(self, case: str) -> None:
        reason = self.built.skips.get(case)
        if reason is not None:
            pytest.skip(f"{self.name}: {reason}")

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
        self.events.clear()
        self.built.ran.clear()
        return self.call(method, path, dict(headers or {}))


@pytest.fixture(scope="module", params=list(FACTORIES))
def kit(
    request: pytest.FixtureRequest, shared_issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kit]:
    name: str = request.param
    events: list[AuditEvent] = []
    built = _build(request, name, shared_issuer, tmp_path_factory, events)
    with built.client() as call:
        yield Kit(name, built, call, events)


def _build(
    request: pytest.FixtureRequest,
    name: str,
    issuer: LocalIssuer,
    tmp_path_factory: pytest.TempPathFactory,
    events: list[AuditEvent],
) -> Built:
    """Integration ``name``'s app, with a static folder holding :data:`SECRET`."""
    if name.startswith("django"):
        request.getfixturevalue("django_project")  # Django's one project per process
    static = tmp_path_factory.mktemp("static")
    (static / "secret.txt").write_text(SECRET)
    return FACTORIES[name](settings_for(issuer), events, static)


def handlers_run(built: Built) -> list[str]:
    """The protected handlers and mounted apps that ran (hooks, recorded as ``hook:...``, left out)."""
    return [entry for entry in built.ran if not entry.startswith("hook:")]


def assert_refused(answer: Answer, status: int, reason: str) -> None:
    """Our JSON refusal, with its status and reason, and nothing else (never the framework's own 401/403/500)."""
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith("application/json"), answer
    error = answer.json()["error"]
    assert set(error) == {"code", "reason", "message"}
    assert error["reason"] == reason
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")


def assert_one_event(kit: Kit, outcome: str, status: int | None, path: str) -> None:
    assert [(e.outcome, e.status, e.path) for e in kit.events] == [(outcome, status, path)]


# --- in process, through the framework's own test client ---------------------------------------------


@pytest.mark.parametrize("path", ["/status", "/status/deep"])
def test_a_public_path_needs_no_credential(kit: Kit, path: str) -> None:
    answer = kit.request("GET", path)
    assert answer.status == 200
    assert answer.json() == {"public": True}
    assert handlers_run(kit.built) == []  # the app's hooks may run on a public path; no protected handler does


def test_a_protected_route_refuses_before_any_app_code(kit: Kit) -> None:
    assert_refused(kit.request("GET", "/me"), 401, "no_credentials")
    assert kit.built.ran == []  # no hook, preprocessor or handler ran for the unproven caller
    assert_one_event(kit, "refused", 401, "/me")


def test_a_caller_reaches_the_route_and_every_hook(kit: Kit) -> None:
    answer = kit.request("GET", "/me", KEY)
    assert answer.status == 200
    assert answer.json() == {"who": "operator"}
    assert "me" in kit.built.ran
    assert_one_event(kit, "accepted", 200, "/me")


def test_the_hooks_the_framework_runs_before_a_handler_see_only_proven_callers(kit: Kit) -> None:
    kit.skip_unless("hooks")
    kit.request("GET", "/me")
    assert kit.built.ran == []
    kit.request("GET", "/me", KEY)
    hooks = [entry for entry in kit.built.ran if entry.startswith("hook:")]
    assert hooks, "the factory's hooks never ran: the case would prove nothing"


def test_an_unknown_route_is_refused_not_a_404(kit: Kit) -> None:
    kit.skip_unless("unknown")
    assert_refused(kit.request("GET", "/no/such/route"), 401, "no_credentials")
    assert_one_event(kit, "refused", 401, "/no/such/route")


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_head_and_options_are_not_exempt(kit: Kit, method: str) -> None:
    kit.skip_unless(method.lower())
    answer = kit.request(method, "/me")
    assert answer.status == 401
    assert kit.built.ran == []
    assert_one_event(kit, "refused", 401, "/me")


def test_a_refusal_raised_by_the_handler_is_our_json(kit: Kit) -> None:
    assert_refused(kit.request("GET", "/raise", KEY), 403, "insufficient_scope")
    assert_one_event(kit, "refused", 403, "/raise")


def test_the_adapters_permission_check_refuses_in_our_json(kit: Kit) -> None:
    kit.skip_unless("permission")
    assert_refused(kit.request("GET", "/admin", KEY), 403, "insufficient_scope")
    assert "admin" not in kit.built.ran
    assert_one_event(kit, "refused", 403, "/admin")


def test_a_refusal_from_a_dependency_is_our_json(kit: Kit) -> None:
    kit.skip_unless("dependency")
    assert_refused(kit.request("GET", "/dep", KEY), 403, "insufficient_scope")
    assert "dep" not in kit.built.ran
    assert_one_event(kit, "refused", 403, "/dep")


def test_a_refusal_from_a_mounted_app_is_our_json_not_a_500(kit: Kit) -> None:
    kit.skip_unless("mount")
    assert_refused(kit.request("GET", "/sub/raise", KEY), 403, "insufficient_scope")
    assert_one_event(kit, "refused", 403, "/sub/raise")


def test_a_mounted_app_is_judged_on_its_full_path(kit: Kit) -> None:
    """``/status`` is public at the root; the mounted app's own ``/status`` is ``/sub/status``, which is not."""
    kit.skip_unless("mount")
    assert_refused(kit.request("GET", "/sub/status"), 401, "no_credentials")
    assert kit.built.ran == []
    assert_one_event(kit, "refused", 401, "/sub/status")


def test_static_files_are_protected_unless_public(kit: Kit) -> None:
    kit.skip_unless("static")
    refused = kit.request("GET", "/static/secret.txt")
    assert_refused(refused, 401, "no_credentials")
    assert SECRET.encode() not in refused.body
    assert_one_event(kit, "refused", 401, "/static/secret.txt")
    served = kit.request("GET", "/static/secret.txt", KEY)
    assert served.status == 200
    assert served.body == SECRET.encode()


def test_a_route_the_app_marks_anonymous_opens_that_route_only(kit: Kit) -> None:
    """A framework's own "anonymous" mark, put by the app on a route it wrote, opens that route (the app's
    explicit decision, like a public path); what the framework serves by itself stays protected (above)."""
    kit.skip_unless("marked")
    answer = kit.request("GET", "/marked")
    assert answer.status == 200
    assert answer.json() == {"marked": True}
    below = kit.request("GET", "/marked/x")  # not a prefix: the mark is on one route
    assert below.status in (401, 404), below  # 404 only where the router answers first (Litestar)
    assert handlers_run(kit.built) == []


# --- live, under uvicorn (a WSGI app: Werkzeug's threaded server): the request line byte for byte ----------

#: Request targets sent as written. None may reach protected code or a file without a credential; a 200 is
#: only ever the public handler's answer.
PATHS = [
    "/status",
    "/status/",
    "/status/deep",
    "/status/deep/",
    "/status%2Fx",
    "/status%2fx",
    "/status%2Fdeep",
    "/%73tatus",
    "/%73tatus/deep",
    "//status",
    "/status//deep",
    "//status/../me",
    "/status/../me",
    "/status/./../me",
    "/status/%2e%2e/me",
    "/status/..%2fme",
    "/status/deep/../../me",
    "/status/..;/me",
    "/STATUS",
    "/Status/deep",
    "/status;x",
    "/status;x/deep",
    "/status/deep;x",
    "/me;/status",
    "/status%00",
    "/status%0a",
    "/status?x=/status",
    "/sub/status",
    "/sub//status",
    "/sub/status/../raise",
    "/static/secret.txt",
    "/static/../static/secret.txt",
    "/status/../static/secret.txt",
    "/static%2Fsecret.txt",
    "/x/../me",
    "http://127.0.0.1/me",
    "http://127.0.0.1/status/../me",
    "/files/status",
]


class Live:
    def __init__(self, name: str, built: Built, base: str) -> None:
        self.name = name
        self.built = built
        self.base = base
        self.port = int(urlsplit(base).port or 80)


@pytest.fixture(scope="module", params=list(FACTORIES))
def live(
    request: pytest.FixtureRequest, shared_issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    name: str = request.param
    built = _build(request, name, shared_issuer, tmp_path_factory, [])
    server = serve_werkzeug(built.wsgi) if built.wsgi is not None else serve_uvicorn(built.asgi, lifespan="auto")
    with server as base:
        yield Live(name, built, base)


def raw_request(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request with ``target`` exactly as given; the status and the raw rest of the answer."""
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("target", PATHS)
def test_no_request_target_reaches_protected_code_without_a_credential(live: Live, target: str) -> None:
    live.built.ran.clear()
    assert_reached_nothing(live.built, target, *raw_request(live.port, target))


def assert_reached_nothing(built: Built, target: str, status: int, body: bytes) -> None:
    """An anonymous request ran no protected code and got no file; a 200 is the public handler's alone."""
    assert handlers_run(built) == [], f"{target} ran {built.ran} for an anonymous caller"
    assert SECRET.encode() not in body
    if status == 200:
        assert b'"public"' in body, body
    if status == 401:
        assert built.ran == [], f"{target} was refused after {built.ran} ran"


#: The ``root_path`` a server is given below: the catch-all route's prefix too, so a framework and the adapter
#: that remove it differently (once more, anywhere in the path, or not at all) send a public-looking path there.
ROOT = "/files"
#: Request targets under that root_path. uvicorn puts root_path in front of the path; hypercorn leaves the path
#: as requested, so a target may or may not start with it.
ROOT_TARGETS = [
    "/status",
    "/status/x",
    "/files/status",
    "/files/status/x",
    "/files/files/status/x",
    "/status/files/me",
    "/status/files/x/y",
    "/status/files/sub/raise",
    "/status/files/static/secret.txt",
    "/files/status/files/sub/raise",
    "//files/status/x",
]


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_root_path_is_removed_as_the_framework_removes_it(
    request: pytest.FixtureRequest,
    shared_issuer: LocalIssuer,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    server: str,
) -> None:
    """Behind a proxy that strips a prefix (``--root-path``), each framework removes ``root_path`` its own way:
    Starlette and Django from the front, Litestar wherever it first occurs, Quart turns a path outside it into
    ``"/ "``, Falcon and Sanic route the whole path. Public paths are judged on what the framework routes."""
    events: list[AuditEvent] = []
    built = _build(request, name, shared_issuer, tmp_path_factory, events)
    serve = (
        serve_uvicorn(built.asgi, lifespan="auto", root_path=ROOT)
        if server == "uvicorn"
        else serve_hypercorn(built.asgi, root_path=ROOT)
    )
    with serve as base:
        port = int(urlsplit(base).port or 80)
        for target in ROOT_TARGETS:
            built.ran.clear()
            assert_reached_nothing(built, f"{server} --root-path {ROOT}: {target}", *raw_request(port, target))
        # The audit names the path as the server gave it (uvicorn puts root_path in front, hypercorn does not).
        events.clear()
        raw_request(port, "/me", KEY)
        assert [e.path for e in events] == [ROOT + "/me" if server == "uvicorn" else "/me"]


def test_the_live_server_answers_a_caller(live: Live) -> None:
    status, body = raw_request(live.port, "/me", KEY)
    assert status == 200
    assert b"operator" in body


def test_a_refusal_from_a_mounted_app_is_our_json_live(live: Live) -> None:
    """The mount cases again on the live server: some test clients (BlackSheep's) never reach a mount."""
    reason = live.built.skips.get("mount")
    if reason and "covered live" not in reason:
        pytest.skip(f"{live.name}: {reason}")
    status, body = raw_request(live.port, "/sub/raise", KEY)
    assert status == 403, body
    assert b'"insufficient_scope"' in body
    status, body = raw_request(live.port, "/sub/status")
    assert status == 401, body
    assert b'"no_credentials"' in body


def test_a_mounts_own_redirect_needs_a_credential(live: Live) -> None:
    """A browser's navigation to a mount's bare path: BlackSheep redirects it to ``/sub/`` before the mounted app
    runs; the redirect (which says the mount exists) is for a caller, like the mount."""
    reason = live.built.skips.get("mount")
    if reason and "covered live" not in reason:
        pytest.skip(f"{live.name}: {reason}")
    live.built.ran.clear()
    status, body = raw_request(live.port, "/sub", {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "none"})
    assert status == 401, body
    assert b'"no_credentials"' in body
    assert live.built.ran == []
    status, _ = raw_request(live.port, "/sub", {"Sec-Fetch-Mode": "navigate", **KEY})
    assert status != 401  # the caller gets whatever the framework answers (BlackSheep's 307)


def test_a_websocket_is_refused_before_accept(live: Live) -> None:
    if live.built.skips.get("websocket"):
        pytest.skip(f"{live.name}: {live.built.skips['websocket']}")
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    live.built.ran.clear()
    url = live.base.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus) as caught, connect(url, open_timeout=10):
        pass  # pragma: no cover - refused at the handshake
    assert caught.value.response.status_code in (401, 403)
    assert live.built.ran == []


def test_a_websocket_caller_is_accepted(live: Live) -> None:
    for case in ("websocket", "websocket accept"):
        if live.built.skips.get(case):
            pytest.skip(f"{live.name}: {live.built.skips[case]}")
    from websockets.sync.client import connect

    live.built.ran.clear()
    with connect(live.base.replace("http://", "ws://") + "/ws", additional_headers=KEY, open_timeout=10):
        pass
    assert "ws" in live.built.ran
