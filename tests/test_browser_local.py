"""Local mode in a real browser (issue 18, finding 7): no other site's page acts as the operator, under any name
the settings allow, while the operator's own browsing and programs keep working where the request can show it.

Chromium is Debian's ``chromium`` package driven by playwright through ``executable_path`` (playwright's own
browser download is never used); ``--host-resolver-rules`` maps ``devbox.lan`` and ``evil.test`` to 127.0.0.1.
The app runs under uvicorn on 127.0.0.1, in local mode with ``CFACCESS_LOCAL_HOSTS=devbox.lan``, over plain http
and (for ``devbox.lan``) over https with a self-signed certificate; the attacker's pages come from a second
uvicorn on 127.0.0.1, reached as ``http://evil.test:PORT``. A recorder outside the middleware logs the headers
each request arrived with (logger ``tests.browser``) and the audit event the middleware decided on.

Each page action and each wait has a timeout, and the servers stop themselves (``tests.live_servers``). Without
playwright or a Chromium the browser tests are skipped with the reason; the non-browser checks always run.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import ipaddress
import json
import logging
import os
import shutil
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from cfaccess_mw import AuditEvent, CloudflareAccessMiddleware, ExposureMode, Settings

from .live_servers import serve_uvicorn

logger = logging.getLogger("tests.browser")

#: Every page action (navigation, load) and every wait for the app to see a request, in seconds.
ACTION_SECONDS = 8.0
#: A whole browser test; past it the watchdog kills the browser, so the test fails instead of hanging.
TEST_SECONDS = 100.0
#: The headers recorded (and logged) for each request; nothing here is a credential.
RECORDED = ("host", "origin", "referer", "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest")
#: What each page does to the target, in script: T is the target's origin, G the request's tag.
VECTORS = {
    "img": "const i = new Image(); i.src = T + '/probe?v=' + G; document.body.append(i);",
    "form_get": (
        "const f = document.createElement('form'); f.method = 'get'; f.action = T + '/probe';"
        " const x = document.createElement('input'); x.name = 'v'; x.value = G; f.append(x);"
        " document.body.append(f); f.submit();"
    ),
    "fetch_no_cors": "fetch(T + '/probe?v=' + G, {mode: 'no-cors', credentials: 'include'}).catch(() => {});",
    "link": "const a = document.createElement('a'); a.href = T + '/probe?v=' + G; document.body.append(a); a.click();",
    "form_post": (
        "const f = document.createElement('form'); f.method = 'post'; f.action = T + '/probe?v=' + G;"
        " document.body.append(f); f.submit();"
    ),
    "websocket": "new WebSocket(T.replace(/^http/, 'ws') + '/ws?v=' + G);",
    "fetch_credentials": "fetch(T + '/probe?v=' + G, {credentials: 'include'}).catch(() => {});",
    "fetch_post": "fetch(T + '/probe?v=' + G, {method: 'POST', credentials: 'include'}).catch(() => {});",
}
NAVIGATIONS = frozenset({"form_get", "link", "form_post"})
ATTACKS = ("img", "form_get", "fetch_no_cors", "link", "form_post", "websocket", "fetch_credentials")
#: The requests in which a browser names the page that made them (``Origin``) whatever the target's scheme.
WITH_ORIGIN = frozenset({"form_post", "websocket", "fetch_post"})
#: The names the app is reached under; only plain-http devbox.lan gets no Fetch Metadata from a browser.
TARGETS = ("http://devbox.lan", "http://localhost", "http://127.0.0.1", "http://app.localhost", "https://devbox.lan")
RESOLVER_RULES = "MAP devbox.lan 127.0.0.1, MAP evil.test 127.0.0.1"


def browser_says_who(target: str) -> bool:
    """Whether Chromium sends Fetch Metadata to ``target``: an origin it treats as potentially trustworthy."""
    return target != "http://devbox.lan"


# --- the app, its recorder, and the attacker's site ---------------------------------------------------------


@dataclass
class Seen:
    """One tagged request as the app saw it: the headers it came with, the answer, the middleware's decision."""

    headers: dict[str, str]
    answer: int | str | None = None  # the HTTP status, or "accepted"/"refused" for a websocket
    event: AuditEvent | None = None


@dataclass
class Recorder:
    seen: dict[str, Seen] = field(default_factory=dict)
    tag: contextvars.ContextVar[str | None] = field(default_factory=lambda: contextvars.ContextVar("tag"))

    def audit(self, event: AuditEvent) -> None:
        tag = self.tag.get(None)
        if tag is not None and tag in self.seen:
            self.seen[tag].event = event

    def wrap(self, app: Any) -> Any:
        """``app`` behind a recorder of the headers and answer of each request tagged ``?v=``."""

        async def recorded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] not in ("http", "websocket"):
                await app(scope, receive, send)
                return
            query = dict(part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part)
            tag = query.get("v")
            if tag is None:
                await app(scope, receive, send)
                return
            headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k.decode() in RECORDED}
            seen = self.seen[tag] = Seen(headers)
            logger.info("%s %s %s", scope["type"], tag, headers)
            self.tag.set(tag)

            async def send_and_record(message: dict[str, Any]) -> None:
                kind = message["type"]
                if kind == "http.response.start":
                    seen.answer = message["status"]
                elif kind == "websocket.accept":
                    seen.answer = "accepted"
                elif kind in ("websocket.close", "websocket.http.response.start") and seen.answer is None:
                    seen.answer = "refused"
                await send(message)

            await app(scope, receive, send_and_record)

        return recorded

    def wait(self, tag: str) -> Seen | None:
        """The request tagged ``tag`` once the app has answered it and audited it; ``None`` if it never came."""
        deadline = time.monotonic() + ACTION_SECONDS
        while time.monotonic() < deadline:
            seen = self.seen.get(tag)
            if seen is not None and seen.answer is not None and seen.event is not None:
                return seen
            time.sleep(0.02)
        return self.seen.get(tag)


def page(request: Request) -> HTMLResponse:
    """A page that does one ``vector`` to ``target`` (its own origin when not given) as soon as it loads."""
    vector, tag = request.query_params["vector"], request.query_params["tag"]
    target = json.dumps(request.query_params.get("target", ""))
    script = f"const T = {target} || location.origin; const G = {json.dumps(tag)}; {VECTORS[vector]}"
    return HTMLResponse(f"<!doctype html><title>{vector}</title><body><script>{script}</script></body>")


async def probe(request: Request) -> Response:
    return JSONResponse({"kind": request.user.kind})


async def websocket_probe(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"kind": websocket.user.kind})
    await websocket.close()


def local_app(recorder: Recorder) -> Any:
    """The app in local mode, ``devbox.lan`` allowed; ``/ui`` is public, so its page loads under every name."""
    settings = Settings(exposure_mode=ExposureMode.LOCAL, local_hosts=("devbox.lan",), public_paths=("/ui",))
    app = Starlette(
        routes=[
            Route("/probe", probe, methods=["GET", "POST"]),
            Route("/ui", page),
            WebSocketRoute("/ws", websocket_probe),
        ]
    )
    app.add_middleware(CloudflareAccessMiddleware, settings=settings, audit_hook=recorder.audit)
    return recorder.wrap(app)


@dataclass
class Servers:
    recorder: Recorder
    app_port: int
    tls_port: int
    attacker: str
    certificate: Path

    def target(self, base: str) -> str:
        return f"{base}:{self.tls_port if base.startswith('https') else self.app_port}"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a certificate for devbox.lan and 127.0.0.1, valid for an hour."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devbox.lan")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("devbox.lan"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_file, certificate_file = directory / "key.pem", directory / "certificate.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_file, certificate_file


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """The app over http and over https, and the attacker's site, each a uvicorn on 127.0.0.1."""
    recorder = Recorder()
    key, certificate = self_signed(tmp_path)
    attacker_app = Starlette(routes=[Route("/attack", page)])
    with (
        serve_uvicorn(local_app(recorder)) as plain,
        serve_uvicorn(local_app(recorder), ssl_keyfile=str(key), ssl_certfile=str(certificate)) as tls,
        serve_uvicorn(attacker_app) as attacker,
    ):
        yield Servers(recorder, port_of(plain), port_of(tls), f"http://evil.test:{port_of(attacker)}", certificate)


# --- the browser ----------------------------------------------------------------------------------------------


def find_chromium() -> str | None:
    """Debian's real binary first (its /usr/bin/chromium is a shell wrapper), then whatever PATH has."""
    if Path("/usr/lib/chromium/chromium").is_file():
        return "/usr/lib/chromium/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Chromium:
    """The launched browser and the flag that marks its processes (for the watchdog)."""

    browser: Any
    marker: str


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """A headless Chromium, or a skip saying what is missing."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium); the browser tests need a real one")
    marker = f"--cfaccess-test-run={uuid.uuid4().hex}"  # Chromium ignores an unknown switch; the watchdog finds it
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=executable,
                args=[
                    "--no-sandbox",
                    "--disable-background-networking",
                    f"--host-resolver-rules={RESOLVER_RULES}",
                    marker,
                ],
                timeout=ACTION_SECONDS * 4 * 1000,
            )
        except Error as exc:
            pytest.skip(f"Chromium at {executable} did not start under playwright: {str(exc)[:300]}")
        try:
            yield Chromium(browser, marker)
        finally:
            with watchdog(marker):
                browser.close()


def kill_marked(marker: str) -> None:
    """SIGKILL, by pid, the processes whose command line carries ``marker``: only the Chromium this module launched."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in command_line.split(b"\0"):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def watchdog(marker: str) -> Iterator[None]:
    """Kill the browser if the block outlives ``TEST_SECONDS``: a playwright call without a timeout of its own
    (closing a tab or a context) then fails instead of hanging the run."""
    timer = threading.Timer(TEST_SECONDS, kill_marked, args=(marker,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextlib.contextmanager
def browser_tab(chromium: Chromium) -> Iterator[Any]:
    """One tab in a fresh browser context (no cookies, no history), under the watchdog.

    Every visit reuses the tab: with Debian's Chromium, playwright's ``Page.close()`` can wait forever, while
    closing the whole context returns.
    """
    with watchdog(chromium.marker):
        context = chromium.browser.new_context(ignore_https_errors=True)  # the https app's certificate is self-signed
        context.set_default_timeout(ACTION_SECONDS * 1000)
        context.set_default_navigation_timeout(ACTION_SECONDS * 1000)
        try:
            yield context.new_page()
        finally:
            context.close()


def visit(tab: Any, url: str, recorder: Recorder, tag: str, vector: str = "typed") -> Seen | None:
    """Open ``url`` in ``tab`` (the page there does ``vector``) and return what the app saw of the request
    tagged ``tag``.

    When the page navigates to that request (a link, a form), the tab is also waited for until it shows the
    answer, so that the navigation cannot interrupt the next visit.
    """
    tab.goto(url, wait_until="commit")
    seen = recorder.wait(tag)
    if vector in NAVIGATIONS and seen is not None:
        tab.wait_for_url(lambda address: f"/probe?v={tag}" in address, wait_until="commit")
    return seen


def new_tag(target: str, vector: str) -> str:
    return f"{target.split('//')[1]}-{vector}-{uuid.uuid4().hex[:8]}"


def describe(seen: Seen | None) -> str:
    if seen is None:
        return "never reached the app"
    event = seen.event
    decision = "no audit event" if event is None else f"{event.outcome} kind={event.kind} reason={event.reason}"
    return f"answer={seen.answer} {decision} headers={seen.headers}"


def granted(seen: Seen | None) -> bool:
    return (
        seen is not None and seen.event is not None and seen.event.kind == "local" and seen.answer in (200, "accepted")
    )


def refused_without_credentials(seen: Seen | None, vector: str) -> bool:
    if seen is None or seen.event is None:
        return False
    answer_refused = seen.answer == "refused" if vector == "websocket" else seen.answer == 401
    return answer_refused and seen.event.outcome == "refused" and seen.event.reason == "no_credentials"


# --- 1. no other site's page is the operator, under any name --------------------------------------------------


@pytest.mark.parametrize("base", TARGETS)
def test_no_other_sites_page_is_the_operator(chromium: Chromium, servers: Servers, base: str) -> None:
    target = servers.target(base)
    outcomes: dict[str, Seen | None] = {}
    with browser_tab(chromium) as tab:
        for vector in ATTACKS:
            tag = new_tag(base, vector)
            attack = f"{servers.attacker}/attack?vector={vector}&tag={tag}&target={target}"
            outcomes[vector] = visit(tab, attack, servers.recorder, tag, vector)
    report = "\n".join(f"  {vector}: {describe(seen)}" for vector, seen in outcomes.items())
    assert all(refused_without_credentials(seen, vector) for vector, seen in outcomes.items()), (
        f"a page on evil.test was not refused under {target}:\n{report}"
    )


# --- 2. the operator's own browsing: a typed URL, and the app's own page --------------------------------------


@pytest.mark.parametrize("base", TARGETS)
def test_the_operators_typed_url_is_the_operator_where_the_browser_says_so(
    chromium: Chromium, servers: Servers, base: str
) -> None:
    target = servers.target(base)
    tag = new_tag(base, "typed")
    with browser_tab(chromium) as tab:
        seen = visit(tab, f"{target}/probe?v={tag}", servers.recorder, tag)
    if browser_says_who(base):
        assert granted(seen), describe(seen)
        assert seen is not None
        assert seen.headers.get("sec-fetch-site") == "none"
    else:  # to plain-http devbox.lan a typed URL looks exactly like another site's link: refused
        assert refused_without_credentials(seen, "typed"), describe(seen)


@pytest.mark.parametrize("base", TARGETS)
def test_the_apps_own_page_is_the_operator_where_the_browser_says_so(
    chromium: Chromium, servers: Servers, base: str
) -> None:
    target = servers.target(base)
    outcomes: dict[str, Seen | None] = {}
    with browser_tab(chromium) as tab:
        for vector in VECTORS:
            tag = new_tag(base, f"own-{vector}")
            outcomes[vector] = visit(tab, f"{target}/ui?vector={vector}&tag={tag}", servers.recorder, tag, vector)
    report = "\n".join(f"  {vector}: {describe(seen)}" for vector, seen in outcomes.items())
    for vector, seen in outcomes.items():
        if browser_says_who(base) or vector in WITH_ORIGIN:
            assert granted(seen), f"{vector} from the app's own page under {target} was refused:\n{report}"
        else:  # plain-http devbox.lan, a request without Origin: the browser said nothing, so no grant
            assert refused_without_credentials(seen, vector), f"{vector} under {target}:\n{report}"


# --- 3. what Chromium sends, which is why the rule is what it is ----------------------------------------------


def test_chromium_says_who_made_a_request_only_to_a_trustworthy_origin(chromium: Chromium, servers: Servers) -> None:
    """Pins the facts the rule stands on: to plain-http devbox.lan another site's image, link, form GET and
    no-cors fetch carry neither Origin nor Sec-Fetch-Site; to localhost and to https they say cross-site; a
    websocket never carries Sec-Fetch-Site, but always Origin."""
    seen: dict[tuple[str, str], dict[str, str]] = {}
    with browser_tab(chromium) as tab:
        for base in ("http://devbox.lan", "http://localhost", "https://devbox.lan"):
            for vector in ("img", "link", "form_get", "fetch_no_cors", "websocket"):
                tag = new_tag(base, vector)
                url = f"{servers.attacker}/attack?vector={vector}&tag={tag}&target={servers.target(base)}"
                result = visit(tab, url, servers.recorder, tag, vector)
                assert result is not None, f"{vector} to {base} never reached the app"
                seen[base, vector] = result.headers
    for (base, vector), headers in seen.items():
        if vector == "websocket":
            assert headers.get("origin", "").startswith("http://evil.test:"), (base, headers)
            assert "sec-fetch-site" not in headers, (base, headers)
        elif base == "http://devbox.lan":
            assert "origin" not in headers, (base, vector, headers)
            assert "sec-fetch-site" not in headers, (base, vector, headers)
        else:
            assert headers.get("sec-fetch-site") == "cross-site", (base, vector, headers)


# --- 4. programs on the host: curl, httpx, scripts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "granted_"),
    [("127.0.0.1", True), ("localhost", True), ("app.localhost", True), ("[::1]", True), ("devbox.lan", False)],
)
def test_a_program_on_the_host_is_the_operator_under_a_loopback_name(
    servers: Servers, host: str, granted_: bool
) -> None:
    """Over plain http: under devbox.lan a program looks exactly like a browser following another site's link."""
    tag = new_tag(f"http://{host}", "httpx")
    response = httpx.get(
        f"http://127.0.0.1:{servers.app_port}/probe?v={tag}",
        headers={"Host": f"{host}:{servers.app_port}"},
        timeout=ACTION_SECONDS,
    )
    if granted_:
        assert response.status_code == 200
        assert response.json() == {"kind": "local"}
    else:
        assert response.status_code == 401
        assert response.json()["error"]["reason"] == "no_credentials"


def test_a_program_on_the_host_is_the_operator_under_a_configured_name_over_https(servers: Servers) -> None:
    """Over https a browser would have sent Sec-Fetch-Site, so a request without one is a program's."""
    tls = ssl.create_default_context(cafile=str(servers.certificate))
    tag = new_tag("https://devbox.lan", "httpx")
    with httpx.Client(verify=tls, timeout=ACTION_SECONDS) as client:
        response = client.get(
            f"https://127.0.0.1:{servers.tls_port}/probe?v={tag}", headers={"Host": f"devbox.lan:{servers.tls_port}"}
        )
    assert response.status_code == 200
    assert response.json() == {"kind": "local"}
