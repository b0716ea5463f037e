"""A small CLI that calls the example app's API through Cloudflare Access.

    python -m examples.cli_client                 # GET /api/me
    python -m examples.cli_client /api/machines
    python -m examples.cli_client --config ./config.toml /api/me

It reads ``$CFACCESS_CLIENT_CONFIG`` or ``~/.config/cfaccess-example/config.toml``
(``$XDG_CONFIG_HOME`` is honoured), then ``CFACCESS_CLIENT_*`` variables::

    [api]
    url = "https://app.example.com"
    key = "${EXAMPLE_API_KEY}"

    [api.headers]
    CF-Access-Client-Id = "0123abcd.access"
    CF-Access-Client-Secret = "${CF_ACCESS_CLIENT_SECRET}"

and shows each step: what goes to the edge (names only), what goes to the app,
and the app's answer. Exit codes: 0 the app said yes, 1 the app said no, 2 the
configuration or the edge stopped the call, 3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx

from cfaccess_mw.client import AccessAuth, AccessChallengeError, ClientConfigError, CloudflaredError

APP_NAME = "cfaccess-example"


def load(config: str | None) -> AccessAuth:
    if config is not None:
        return AccessAuth.from_file(config)
    return AccessAuth.from_env(app_name=APP_NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", default="/api/me", help="API path to GET (default /api/me)")
    parser.add_argument("--config", help="TOML config file (default: see above)")
    args = parser.parse_args(argv)

    try:
        auth = load(args.config)
    except ClientConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if auth.base_url is None:
        print("config error: no [api] url (or CFACCESS_CLIENT_URL) to call", file=sys.stderr)
        return 2

    edge = [name for name in auth.header_names if name != "Authorization"]
    print(f"1. edge:   {', '.join(edge) + ' (values hidden)' if edge else 'no edge headers configured'}")
    has_key = "Authorization" in auth.header_names
    print(f"2. app:    {'Authorization: Bearer (key hidden)' if has_key else 'no API key configured'}")
    try:
        with auth.client() as client:
            response = client.get(args.path)
    except AccessChallengeError as exc:
        print(f"   stopped at the edge: {exc}", file=sys.stderr)
        return 2
    except CloudflaredError as exc:
        print(f"   cloudflared: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"   could not reach {auth.base_url}: {type(exc).__name__}", file=sys.stderr)
        return 3
    print(f"3. answer: {response.status_code} from GET {response.url}")
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text[:2000])
    return 0 if response.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
