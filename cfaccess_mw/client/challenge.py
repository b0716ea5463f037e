"""Telling the edge's refusal from the app's: a redirect to the Access login page, or a ``Cloudflare-Access``
challenge, becomes an :class:`AccessChallengeError` that says what to configure."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import httpx

from ..core.errors import CfAccessError
from .config import (
    ENV_CLOUDFLARED,
    ENV_HEADERS,
    _host_of,
    _printable,
)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


_CHALLENGE_SCHEME = re.compile(r"(?:^|,)\s*Cloudflare-Access(?=\s|,|$)(?P<params>[^\n]*)", re.IGNORECASE)


_RESOURCE_METADATA = re.compile(r'resource_metadata\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s,]+))', re.IGNORECASE)


class AccessChallengeError(CfAccessError):
    """The edge stopped the request before it reached the app.

    ``host`` is the protected host that was called; ``resource_metadata`` the URL
    from a ``WWW-Authenticate: Cloudflare-Access resource_metadata="..."``
    challenge (``None`` for a redirect to the login page); ``login_url`` the
    redirect target, if that was the form; ``sent`` the names of the edge headers
    this client sent (empty when none were configured).
    """

    def __init__(
        self,
        host: str,
        resource_metadata: str | None = None,
        *,
        login_url: str | None = None,
        sent: Iterable[str] = (),
        app_url: str | None = None,
        configured_in: str | None = None,
    ) -> None:
        self.host = host
        self.resource_metadata = resource_metadata
        self.login_url = login_url
        self.sent = tuple(sent)
        #: The called origin, scheme and port kept (``https://app.example.com:8443``): what cloudflared signs in to.
        self.app_url = app_url or f"https://{host}"
        #: Where the caller's settings live: ``"environment"``, a config file's path, or ``None`` (code).
        self.configured_in = configured_in
        super().__init__(self._message())

    def _how_to_configure(self) -> str:
        """How to add a service token or cloudflared, said in the terms of wherever this client is configured."""
        login = f"`cloudflared access login {self.app_url}`"
        if self.configured_in == "environment":
            return (
                f" To pass it, set a service token: {ENV_HEADERS}='CF-Access-Client-Id=<id>.access,"
                "CF-Access-Client-Secret=${CF_ACCESS_CLIENT_SECRET}'; or, as a person, run"
                f" {login} and set {ENV_CLOUDFLARED}=true."
            )
        if self.configured_in is not None:
            return (
                f" To pass it, add a service token under [api.headers] in {self.configured_in}:"
                ' CF-Access-Client-Id = "<id>.access" and CF-Access-Client-Secret = "${CF_ACCESS_CLIENT_SECRET}";'
                f" or, as a person, run {login} and set cloudflared = true under [api]."
            )
        return (
            " To pass it, send a service token's CF-Access-Client-Id and CF-Access-Client-Secret headers"
            f" (AccessAuth(headers=...)); or, as a person, run {login} and use a CloudflaredToken."
        )

    def _message(self) -> str:
        if self.login_url is not None:
            how = f"answered with a redirect to its login page on {_host_of(self.login_url)}"
        else:
            how = "answered with a Cloudflare-Access challenge"
        text = f"Cloudflare Access in front of {self.host} {how}; the request never reached the app."
        if self.resource_metadata:
            text += f" Resource metadata: {self.resource_metadata}."
        if self.sent:
            text += (
                f" The edge did not accept the headers sent ({', '.join(self.sent)}): check their values, and that"
                " the Access application has a Service Auth policy for this service token, or sign in again"
                f" with `cloudflared access login {self.app_url}`."
            )
        else:
            text += self._how_to_configure()
        return text


def _is_access_login(location: httpx.URL) -> bool:
    host = location.host.lower()
    on_team_domain = host == "cloudflareaccess.com" or host.endswith(".cloudflareaccess.com")
    # A custom team domain serves the same login path (Cloudflare docs, "Custom team domain").
    return on_team_domain or location.path.startswith("/cdn-cgi/access/login")


def detect_challenge(
    response: httpx.Response, sent: Iterable[str] = (), *, configured_in: str | None = None
) -> AccessChallengeError | None:
    """The :class:`AccessChallengeError` ``response`` amounts to, or ``None`` if it came from the app.

    Two signs (Cloudflare docs, "Authenticate agents" and its review): a redirect
    whose ``Location`` is the Access login page (``*.cloudflareaccess.com``, or
    ``/cdn-cgi/access/login`` on a custom team domain), or a
    ``WWW-Authenticate: Cloudflare-Access resource_metadata="..."`` header.
    """
    called = response.request.url
    host = called.host
    context: dict[str, Any] = {
        "sent": sent,
        "app_url": f"{called.scheme}://{called.netloc.decode('ascii')}",
        "configured_in": configured_in,
    }
    for value in response.headers.get_list("www-authenticate"):
        match = _CHALLENGE_SCHEME.search(value)
        if match:
            meta = _RESOURCE_METADATA.search(match.group("params"))
            metadata = (meta.group("quoted") or meta.group("bare")) if meta else None
            return AccessChallengeError(host, _printable(metadata) if metadata else None, **context)
    if response.status_code in _REDIRECTS and "location" in response.headers:
        try:
            location = response.request.url.join(response.headers["location"])
        except httpx.InvalidURL:
            return None
        if _is_access_login(location):
            return AccessChallengeError(host, None, login_url=_printable(str(location), 500), **context)
    return None
