"""``cfaccess-mw``: answers for the person who deploys an app behind Cloudflare Access.

    cfaccess-mw check [--strict]    validate the CFACCESS_* variables, fetch the signing keys, print the policy
    cfaccess-mw explain TOKEN|-     decode a token, then say which check (if any) refuses it, and why
    cfaccess-mw new-api-key NAME    a new random API key, shown once, and its CFACCESS_API_KEYS entry
    cfaccess-mw demo                the middleware against a local stand-in for Cloudflare, in-process
    cfaccess-mw dev [token EMAIL]   a stand-in issuer on loopback for running your own app; mint its tokens
    cfaccess-mw --version           the installed version

``check`` and ``explain`` read the same variables as the middleware and run the
middleware's own code (:meth:`Settings.from_env`, :class:`JWKSClient`,
:meth:`Authenticator.identify`), so what they say is what a
request would get.

Exit status: 0 all is well; 1 a check failed (the token is refused or malformed,
the certs endpoint cannot be used); 2 usage or configuration error (the message
names the variable); 70 a bug. A failure always ends with one line on stderr that
starts with ``cfaccess-mw:``, never a traceback. Warnings (an unknown
``CFACCESS_*`` variable, a key the certs endpoint lists but that cannot be used)
go to stderr as ``cfaccess-mw: warning: ...``; ``check --strict`` (or
``CFACCESS_STRICT=true``) makes an unknown variable an error instead, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from .. import __version__
from ..core.errors import ConfigError
from ..core.providers import Provider
from .apikey import cmd_new_api_key
from .check import cmd_check
from .demo import cmd_demo, cmd_dev, cmd_dev_token
from .explain import cmd_explain
from .output import (
    EXIT_BUG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CliError,
    _WarningPrinter,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see: {self.prog} --help)", EXIT_USAGE)


# --- entry point: each command is a module of this package (check, explain, apikey, demo) -----------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Check, explain and manage a cfaccess_mw deployment. Reads the same CFACCESS_* "
        "variables as the middleware.",
        epilog="Exit status: 0 ok; 1 a check failed; 2 usage or configuration error; 70 a bug in cfaccess-mw.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="validate CFACCESS_*, fetch the signing keys, print the policy",
        description="Validate every CFACCESS_* variable as the middleware does (an unknown one is a warning, usually "
        "a typo), fetch the signing keys from the certs endpoint, and print the effective policy. Run it with "
        "exactly the environment the app gets; OK means the configuration is sound and a problem is in the "
        "request (then explain its token).",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="an unknown CFACCESS_* variable (a typo such as CFACCESS_PUBLIC_PATH) is an error, exit 2, not a "
        "warning; CFACCESS_STRICT=true does the same for the app itself",
    )
    check.set_defaults(func=cmd_check)

    explain = commands.add_parser(
        "explain",
        help="decode a token and say which check refuses it",
        description="Decode a token without trusting it, then verify it exactly as the middleware would with the "
        "CFACCESS_* configuration and say which check refuses it, and what to change. Even when the signing keys "
        "cannot be fetched it compares the token's issuer and audience with the configuration.",
    )
    explain.add_argument(
        "token",
        metavar="TOKEN",
        help="the token as the proxy forwards it: the value of Cf-Access-Jwt-Assertion (Cloudflare), "
        "x-goog-iap-jwt-assertion (Google IAP), X-Pomerium-Jwt-Assertion (Pomerium), x-amzn-oidc-data (AWS ALB) "
        "or the OIDC ID token (Authorization: Bearer); a pasted 'Name: value' line is fine. '-' reads it from "
        "stdin, which keeps it out of shell history",
    )
    explain.set_defaults(func=cmd_explain)

    new_key = commands.add_parser("new-api-key", help="print a new API key once, and its CFACCESS_API_KEYS entry")
    new_key.add_argument("name", metavar="NAME", help="who the key is for, e.g. operator or backup-job")
    new_key.set_defaults(func=cmd_new_api_key)

    demo = commands.add_parser("demo", help="run the middleware against a local stand-in for Cloudflare Access")
    demo.set_defaults(func=cmd_demo)
    _add_dev(commands)
    return parser


def _add_dev(commands: Any) -> None:
    dev = commands.add_parser(
        "dev",
        help="serve a stand-in issuer on 127.0.0.1 for running your own app; print its exports and a token",
        description="Serve a stand-in issuer (any preset) on 127.0.0.1 until Ctrl-C. It prints the CFACCESS_* "
        "lines to export in the terminal that runs your app, and a token to curl it with; `cfaccess-mw dev token` "
        "(in a shell with those exports) mints more. Its keys exist only in this process.",
    )
    dev.add_argument("--provider", choices=[p.value for p in Provider], default="cloudflare", help="which proxy")
    dev.add_argument("--port", type=int, default=0, help="the issuer's port (default: a free one); a fixed port "
                     "keeps the exports valid when dev restarts")  # fmt: skip
    dev.add_argument("--email", default="alice@example.com", help="whose first token to print")
    dev.add_argument("--lifetime", type=float, default=3600.0, help="seconds the tokens stay valid (IAP: 600 at most)")
    dev.add_argument("--max-seconds", type=float, default=12 * 3600.0, help=argparse.SUPPRESS)
    dev.set_defaults(func=cmd_dev)
    token_commands = dev.add_subparsers(dest="dev_command", metavar="token")
    token = token_commands.add_parser(
        "token",
        help="mint a token from the running `cfaccess-mw dev`",
        description="Mint a token from the running `cfaccess-mw dev`, found through the CFACCESS_* variables it "
        "printed (export them first, or pass --url).",
    )
    token.add_argument("email", metavar="EMAIL", nargs="?", help="the user's email")
    token.add_argument("--service", metavar="CLIENT_ID", help="a service token for this client ID (Cloudflare)")
    token.add_argument("--lifetime", type=float, default=3600.0, help="seconds it stays valid (negative: expired)")
    token.add_argument("--header", action="store_true", help="print the whole header line, for curl -H")
    token.add_argument("--url", help="the token endpoint `cfaccess-mw dev` printed (default: from CFACCESS_*)")
    token.set_defaults(func=cmd_dev_token)


async def _awaited(result: Awaitable[int]) -> int:
    return await result


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: {' '.join(message.split())}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cfaccess-mw`` console script. Returns the exit status."""
    handler = _WarningPrinter()
    package_logger = logging.getLogger("cfaccess_mw")
    package_logger.addHandler(handler)
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int | Awaitable[int]] = args.func
        result = func(args)
        # One event loop per command, and all of a command's work inside it.
        return asyncio.run(_awaited(result)) if inspect.isawaitable(result) else result
    except CliError as exc:
        _fail(exc.message)
        return exc.code
    except ConfigError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed early (piped into head)
        return EXIT_FAILED
    except Exception as exc:
        # Only the type: the message of an unexpected error could quote the token.
        _fail(f"unexpected {type(exc).__name__}; this is a bug in cfaccess_mw, please report it")
        return EXIT_BUG
    finally:
        package_logger.removeHandler(handler)
