"""``cfaccess-mw new-api-key NAME``: a new random API key, shown once, and the ``CFACCESS_API_KEYS`` entry (its
hash) to configure."""

from __future__ import annotations

import argparse
import secrets

from ..core.errors import ConfigError
from ..core.settings import ApiKey
from .output import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    _out,
)


def cmd_new_api_key(args: argparse.Namespace) -> int:
    """Print a new random API key once, and the hashed entry for ``CFACCESS_API_KEYS``."""
    name: str = args.name
    if any(c in name for c in ":,") or any(c.isspace() for c in name):
        raise CliError(f"NAME {name!r} must not contain ':', ',' or spaces", EXIT_USAGE)
    try:
        ApiKey.parse(f"{name}:sha256:{'0' * 64}")
    except ConfigError as exc:
        raise CliError(f"NAME: {exc.problem}", EXIT_USAGE) from None
    secret = secrets.token_urlsafe(32)
    key = ApiKey.from_secret(name, secret)
    _out(f"New API key {name!r}. It is shown only now and stored nowhere: give it to the caller.")
    _out()
    _out(f"  {secret}")
    _out()
    _out("Add this entry to CFACCESS_API_KEYS (comma-separated) or as a line of CFACCESS_API_KEYS_FILE:")
    _out()
    _out(f"  {key.line()}")
    _out()
    _out("The caller sends:  Authorization: Bearer <the key>")
    return EXIT_OK
