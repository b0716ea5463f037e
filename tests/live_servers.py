"""Real servers on 127.0.0.1 for the framework adapters' tests: uvicorn and hypercorn in a thread of this
process, granian in a subprocess (its workers are Rust processes that import the app by name), and for WSGI apps
Werkzeug's threaded server in a thread of this process.

Each binds loopback only, stops on leaving the ``with`` block and, failing that, on
a timer; a server that does not come up within ``START_SECONDS`` fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 20.0
MAX_SECONDS = 120.0


def _wait_until(ready: Any, alive: Any, what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)


@contextlib.contextmanager
def serve_uvicorn(app: Any, lifespan: Literal["auto", "on", "off"] = "on", **options: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free port; yields its base URL (``https://`` when ``options`` give a TLS key).

    ``options`` go to ``uvicorn.Config`` (``ssl_keyfile``, ``ssl_certfile``, ``proxy_headers``...).
    """
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    timer = threading.Timer(MAX_SECONDS, lambda: setattr(server, "should_exit", True))
    timer.daemon = True
    timer.start()
    try:
        _wait_until(lambda: server.started, thread.is_alive, "uvicorn")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"{'https' if config.is_ssl else 'http'}://127.0.0.1:{port}"
    finally:
        timer.cancel()
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def serve_hypercorn(app: Any, **options: Any) -> Iterator[str]:
    """``app`` under hypercorn (asyncio) on a socket bound here to a free port; yields its base URL.

    ``options`` are set on hypercorn's ``Config`` (``root_path``...).
    """
    from hypercorn.asyncio import serve
    from hypercorn.config import Config, Sockets

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    port = sock.getsockname()[1]

    class BoundConfig(Config):
        def create_sockets(self) -> Sockets:
            return Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])

    config = BoundConfig()
    config.loglevel = "WARNING"
    config.graceful_timeout = 1
    for name, value in options.items():
        setattr(config, name, value)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def run() -> None:
        started.set()
        await serve(app, config, shutdown_trigger=stop.wait)

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    timer = threading.Timer(MAX_SECONDS, lambda: loop.call_soon_threadsafe(stop.set))
    timer.daemon = True
    timer.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: started.is_set() and _answers(base), thread.is_alive, "hypercorn")
        yield base
    finally:
        timer.cancel()
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
        sock.close()


@contextlib.contextmanager
def serve_werkzeug(app: Any) -> Iterator[str]:
    """WSGI ``app`` under Werkzeug's threaded server (a thread per request, as ``flask run`` serves) on a free
    port; yields its base URL. The request target reaches the app as sent (``RAW_URI``, ``REQUEST_URI``)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        timeout = 10  # a stalled client's socket times out in its own thread

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            return

    with serve_socketserver(make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)) as base:
        yield base


@contextlib.contextmanager
def serve_socketserver(server: socketserver.BaseServer, max_seconds: float = MAX_SECONDS) -> Iterator[str]:
    """A bound ``socketserver`` server (wsgiref's, Werkzeug's) serving in a thread; yields its base URL and shuts
    it down after, or after ``max_seconds`` if the block never ends."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    timer = threading.Timer(max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[index]  # an AF_INET server's
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def granian_available() -> bool:
    try:
        import granian  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def serve_granian(target: str, env: Mapping[str, str], interface: str = "asgi", factory: bool = False) -> Iterator[str]:
    """``python -m granian`` serving ``target`` (``module:attr``) from the repository root; yields its base URL.

    The port is found free here and handed over (granian cannot report one it chose).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "granian", "--interface", interface, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--no-ws" if interface == "asginl" else "--ws", "--log-level", "warning"]
    if factory:
        command.append("--factory")
    environment = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [*command, target], cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            _wait_until(lambda: _answers(base), lambda: process.poll() is None, "granian")
        except RuntimeError:
            process.kill()
            _, err = process.communicate(timeout=10)
            raise RuntimeError(f"granian did not start: {err.decode(errors='replace')[-2000:]}") from None
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def _answers(base: str) -> bool:
    try:
        httpx.get(f"{base}/__live_probe__", timeout=1.0)
    except httpx.HTTPError:
        return False
    return True
