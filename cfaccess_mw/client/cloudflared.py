"""Tokens for the edge from a person's ``cloudflared access login``: :class:`CloudflaredToken` runs
``cloudflared access token -app=URL`` when a request needs one, and caches the answer until it expires."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..core.errors import CfAccessError
from ..core.tokens import decode_unverified
from .config import (
    ClientConfigError,
    _printable,
    _Secret,
)

logger = logging.getLogger("cfaccess_mw.client")
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


class CloudflaredError(CfAccessError):
    """``cloudflared`` is missing, failed, or printed no usable token."""


class TokenProvider(Protocol):
    """Something that can produce a per-user edge token (sent as ``cf-access-token``)."""

    def cached(self) -> str | None:
        """A still-valid token without blocking, or ``None``."""

    def token(self) -> str:
        """A valid token, fetching one if needed (may block)."""

    def invalidate(self) -> None:
        """Forget the cached token (the edge refused it)."""


class CloudflaredToken:
    """A person's Access token from ``cloudflared access token -app=<url>``, cached until its ``exp``.

    ``cloudflared access login <url>`` (run once, in a browser) stores the token;
    this provider only reads it, so it never opens a browser behind a CLI's back.
    ``executable`` is a name looked up on ``search_path`` (default ``PATH``) or a
    path; ``clock`` is injectable so tests need no sleeps.
    """

    def __init__(
        self,
        app_url: str,
        *,
        executable: str = "cloudflared",
        search_path: str | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 60.0,
        refresh_margin: float = 30.0,
    ) -> None:
        self.app_url = app_url
        self.executable = executable
        self.search_path = search_path
        self.clock = clock
        self.timeout = timeout
        self.refresh_margin = refresh_margin
        #: How many times ``cloudflared`` has been run (for tests and diagnostics).
        self.runs = 0
        self._token: _Secret | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "cached" if self._token is not None else "empty"
        return f"CloudflaredToken(app_url={self.app_url!r}, executable={self.executable!r}, {state})"

    def cached(self) -> str | None:
        token = self._token
        if token is not None and self.clock() < self._expires_at - self.refresh_margin:
            return token.reveal()
        return None

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def token(self) -> str:
        with self._lock:
            cached = self.cached()
            if cached is not None:
                return cached
            token, exp = self._fetch()
            self._token, self._expires_at = _Secret(token), exp
            return token

    def _login_hint(self) -> str:
        return f"sign in first with `cloudflared access login {self.app_url}`"

    def _fetch(self) -> tuple[str, float]:
        exe = shutil.which(self.executable, path=self.search_path)
        if exe is None:
            raise CloudflaredError(
                f"{self.executable!r} was not found on PATH; install cloudflared "
                "(https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads/) "
                "or name its full path, or use a service token instead"
            )
        self.runs += 1
        logger.debug("cfaccess_mw.client: running %s access token -app=%s", exe, self.app_url)
        try:
            done = subprocess.run(  # noqa: S603 - fixed argument list, no shell; exe is the user's cloudflared
                [exe, "access", "token", f"-app={self.app_url}"],
                stdin=subprocess.DEVNULL,  # a prompt must fail, not hang a CLI
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CloudflaredError(f"cloudflared access token did not finish within {self.timeout:g} s") from None
        except OSError as exc:
            raise CloudflaredError(f"could not run {exe}: {exc.strerror or type(exc).__name__}") from None
        if done.returncode != 0:
            said = _first_line(done.stderr) or _first_line(done.stdout) or "no message"
            raise CloudflaredError(
                f"cloudflared access token failed (exit {done.returncode}): {said}; {self._login_hint()}"
            )
        token = done.stdout.strip()
        try:
            _, claims = decode_unverified(token)
        except CfAccessError:
            raise CloudflaredError(
                f"cloudflared printed no Access token for {self.app_url} ({len(token)} characters of other output);"
                f" {self._login_hint()}"
            ) from None
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise CloudflaredError("the token cloudflared printed has no numeric 'exp' claim")
        if exp - self.refresh_margin <= self.clock():
            raise CloudflaredError(f"the token cloudflared holds for {self.app_url} has expired; {self._login_hint()}")
        return token, float(exp)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return _printable(_JWT_LIKE.sub("<token>", line), 200)
    return ""


def _cloudflared_from(value: object, url: object, where: str) -> CloudflaredToken | None:
    if value is False or value is None:
        return None
    if value is True:
        executable = "cloudflared"
    elif isinstance(value, str) and value.strip():
        executable = value.strip()
    else:
        raise ClientConfigError(where, "must be true, false, or the path of the cloudflared executable")
    if not isinstance(url, str) or not url.strip():
        raise ClientConfigError(where, "needs [api] url: cloudflared fetches a token for that application")
    return CloudflaredToken(url.strip(), executable=executable)
