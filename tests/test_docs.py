"""The documentation site (docs/) stays true: every code block in it runs or is checked, and its reference is whole.

Each ``python`` block is saved under the file name its first line gives (``# fastapi_app.py``; else ``snippet.py``)
and imported in a fresh interpreter, in an empty directory, with a stand-in issuer's ``CFACCESS_*`` in the
environment (and nothing else of the shell's), as a reader would run it. Where the block is a whole app (an ``app``
and a path to ask, in ``SMOKE``), the same process then asks that path without credentials and with a user's
token: under Starlette's ``TestClient`` (lifespan run), Falcon's conductor, or werkzeug's client for WSGI.
Each ``sh`` block must parse (``bash -n``) and its ``CFACCESS_*`` lines, commented alternatives included, must
pass ``Settings.from_env(strict=True)``; every ``cfaccess-mw`` command in ``sh`` and ``console`` blocks must parse
with the CLI's own parser; ``toml``, ``yaml`` and ``json`` blocks must load. Blocks of README.md are run by
``tests/test_readme.py``; the pages include them rather than repeat them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cfaccess_mw import AuditEvent, Reason, Settings
from cfaccess_mw.cli import build_parser
from cfaccess_mw.client import CLIENT_VARIABLES
from cfaccess_mw.core.preset_settings import VARIABLES as PRESET_VARIABLES
from cfaccess_mw.core.settings import known_variables
from cfaccess_mw.testing import LocalIssuer

from . import readme
from .test_readme import clean_env

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DOCS = readme.DOCS
#: Every language a block may have, and what is done with it. A block of any other language fails the suite.
CHECKED = {"python", "sh", "console", "toml", "yaml", "json", "text"}

#: Whole apps and the path each is asked: without credentials it must refuse (401 ``no_credentials``), with
#: alice's token it must answer 200.
SMOKE = {
    "starlette_app": "/me",
    "mounted_app": "/api/items/7",
    "fastapi_app": "/me",
    "asgi_app": "/me",
    "litestar_app": "/me",
    "falcon_app": "/me",
    "blacksheep_app": "/me",
    "quart_app": "/api/me",
    "sanic_app": "/api/me",
    "flask_app": "/api/me",
    "wsgi_app": "/me",
}

RUNNER = """
import importlib, json, os, sys

module = sys.argv[1]
if module == "views":  # Django's views need a configured project: the page's settings.py block, completed
    import django
    from django.conf import settings

    project = importlib.import_module("settings")
    names = {name: getattr(project, name) for name in dir(project) if name.isupper()}
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    settings.configure(**names, SECRET_KEY="docs", DATABASES=databases, ROOT_URLCONF=__name__)
    urlpatterns = []
    django.setup()
namespace = importlib.import_module(module)
path = os.environ.get("DOCS_SMOKE_PATH")
token = {"Cf-Access-Jwt-Assertion": os.environ["DOCS_TOKEN"]}
if path and module == "falcon_app":  # Falcon's lifespan never ends under Starlette's TestClient: its own conductor
    import asyncio

    import falcon.testing

    async def ask():
        async with falcon.testing.ASGIConductor(namespace.app) as conductor:
            anonymous = await conductor.simulate_get(path)
            alice = await conductor.simulate_get(path, headers=token)
        return [anonymous.status_code, anonymous.json["error"]["reason"], alice.status_code]

    print(json.dumps(asyncio.run(ask())))
elif path and module in ("flask_app", "wsgi_app"):  # WSGI: werkzeug's test client, from a remote address
    from werkzeug.test import Client

    client = Client(namespace.app)
    remote = {"REMOTE_ADDR": "203.0.113.7"}
    anonymous = client.get(path, environ_base=remote)
    alice = client.get(path, headers=token, environ_base=remote)
    print(json.dumps([anonymous.status_code, anonymous.json["error"]["reason"], alice.status_code]))
elif path:
    from starlette.testclient import TestClient

    with TestClient(namespace.app, client=("203.0.113.7", 51000)) as client:
        anonymous, alice = client.get(path), client.get(path, headers=token)
    print(json.dumps([anonymous.status_code, anonymous.json()["error"]["reason"], alice.status_code]))
"""


#: A block that only includes a file (``--8<-- "examples/testing/test_django.py"``): the site shows the file.
INCLUDE = re.compile(r'--8<-- "([^"]+)"\n')


def doc_blocks(*languages: str) -> list[tuple[str, str]]:
    """``(id, body)`` of every block of these languages under docs/ (includes aside); the id is ``page[n]``."""
    return [
        (f"{page.relative_to(DOCS)}[{n}]", body)
        for page in sorted(DOCS.rglob("*.md"))
        for n, (lang, body) in enumerate(readme.page_blocks(page))
        if lang in languages and not INCLUDE.fullmatch(body)
    ]


def test_every_included_file_is_a_test_the_suite_runs() -> None:
    """The pages show example tests by including them: files under examples/testing/, which
    tests/test_pytest_plugin.py runs as a reader would (pytest in that folder, stray CFACCESS_* exported)."""
    included = [
        found.group(1)
        for page in DOCS.rglob("*.md")
        for lang, body in readme.page_blocks(page)
        if (found := INCLUDE.fullmatch(body)) and lang == "python"
    ]
    tests = {f"examples/testing/{path.name}" for path in (readme.ROOT / "examples" / "testing").glob("test_*.py")}

    assert sorted(included) == sorted(tests)


def module_name(body: str) -> str:
    """The file a block names on its first line (``# views.py (Django)`` is ``views``), else ``snippet``."""
    found = re.match(r"# (\w+)\.py\b", body)
    return found.group(1) if found else "snippet"


def by_id(*languages: str) -> dict[str, str]:
    return dict(doc_blocks(*languages))


def test_every_block_has_a_language_the_tests_check() -> None:
    languages = {page: {lang for lang, _ in readme.page_blocks(page)} for page in readme.pages()}

    assert {page.name: langs - CHECKED for page, langs in languages.items() if langs - CHECKED} == {}
    assert len(doc_blocks("python")) >= 18, "the pages' python blocks went missing"


@pytest.mark.parametrize("block", sorted(by_id("python")))
def test_every_python_block_runs(block: str, tmp_path: Path) -> None:
    body = by_id("python")[block]
    module = module_name(body)
    if module == "views":  # runs beside the settings.py block of the same page
        (tmp_path / "settings.py").write_text(readme.block_starting("# settings.py (Django)"), encoding="utf-8")
    (tmp_path / f"{module}.py").write_text(body, encoding="utf-8")
    with LocalIssuer(max_requests=20, max_seconds=120) as issuer:
        env = clean_env(**issuer.env(), PYTHONPATH=str(tmp_path), DOCS_TOKEN=issuer.identity_token("alice@example.com"))
        if module in SMOKE:
            env["DOCS_SMOKE_PATH"] = SMOKE[module]
        result = subprocess.run(
            [sys.executable, "-c", RUNNER, module],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert result.returncode == 0, result.stderr
    if module in SMOKE:
        assert json.loads(result.stdout.splitlines()[-1]) == [401, "no_credentials", 200], result.stderr


def test_every_app_on_a_framework_page_is_smoke_tested() -> None:
    names = {module_name(body) for _, body in doc_blocks("python")}

    assert set(SMOKE) <= names, "a SMOKE entry names no block"
    assert {name for name in names if name.endswith("_app")} <= set(SMOKE)


def shell_variables(body: str, api_keys_file: Path) -> dict[str, str]:
    """The ``CFACCESS_*=value`` lines of a shell block, exported, plain or commented out (an alternative shown)."""
    env: dict[str, str] = {}
    for line in body.splitlines():
        found = re.match(r"(?:export\s+|#\s*)?(CFACCESS_[A-Z0-9_]+)=(\S*)", line.strip())
        if found:
            env[found.group(1)] = found.group(2)
    if "CFACCESS_API_KEYS_FILE" in env:  # the page's path is the reader's; here a file of the same form
        api_keys_file.write_text("# keys\noperator:sha256:" + "9f" * 32 + "\n", encoding="utf-8")
        env["CFACCESS_API_KEYS_FILE"] = str(api_keys_file)
    return env


def cli_commands(body: str) -> list[list[str]]:
    """Every ``cfaccess-mw ...`` command of a shell block, or of a console block's ``$`` lines, as argv."""
    lines = body.splitlines()
    if any(line.startswith("$ ") for line in lines):  # a transcript: the rest is output
        lines = [line.removeprefix("$ ") for line in lines if line.startswith("$ ")]
    commands = []
    for line in lines:
        for part in re.findall(r"(?:^|;\s*|\$\()(cfaccess-mw [^;)#]*)", line):
            commands.append(shlex.split(part)[1:])
    return commands


@pytest.mark.parametrize("block", sorted(by_id("sh")))
def test_every_shell_block_parses_and_its_variables_validate(block: str, tmp_path: Path) -> None:
    body = by_id("sh")[block]
    syntax = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True, timeout=30, check=False)
    env = shell_variables(body, tmp_path / "api-keys")

    assert syntax.returncode == 0, syntax.stderr
    if env:
        Settings.from_env(env, strict=True)
    assert env or cli_commands(body), "a shell block with neither CFACCESS_* lines nor a cfaccess-mw command"


@pytest.mark.parametrize("block", sorted(by_id("sh", "console")))
def test_every_cli_command_shown_parses(block: str) -> None:
    for argv in cli_commands(by_id("sh", "console")[block]):
        build_parser().parse_args(argv)  # argparse exits (SystemExit 2) on an unknown command or option


def test_the_shell_blocks_show_every_preset_and_check_it(tmp_path: Path) -> None:
    presets = {shell_variables(body, tmp_path / "api-keys").get("CFACCESS_PROVIDER") for _, body in doc_blocks("sh")}

    assert presets >= {"google-iap", "pomerium", "aws-alb", "oidc"}


@pytest.mark.parametrize("block", sorted(by_id("toml", "yaml", "json")))
def test_every_config_block_loads(block: str) -> None:
    body = by_id("toml", "yaml", "json")[block]
    (lang,) = {lang for lang in ("toml", "yaml", "json") if block in by_id(lang)}
    loaders: dict[str, Callable[[str], Any]] = {"toml": tomllib.loads, "yaml": yaml.safe_load, "json": json.loads}
    loaded = loaders[lang](body)

    assert loaded


# --- the reference is whole ---------------------------------------------------------------------


def page_text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_every_variable_is_in_the_configuration_reference() -> None:
    text = page_text("reference/configuration.md")
    documented = set(re.findall(r"^\| `(CFACCESS_[A-Z0-9_]+)`", text, re.MULTILINE))
    client = set(re.findall(r"`(CFACCESS_CLIENT_[A-Z_]+)", text))

    assert documented == known_variables() | set(PRESET_VARIABLES.values())
    assert client == CLIENT_VARIABLES


def test_the_reason_table_lists_exactly_the_reason_codes() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", page_text("reference/reasons.md"), re.MULTILINE)

    assert sorted(reason for reason, _ in rows) == sorted(reason.value for reason in Reason)


def test_the_audit_field_table_lists_exactly_the_events_fields() -> None:
    rows = re.findall(r"^\| `(\w+)` \|", page_text("reference/audit.md"), re.MULTILINE)

    assert rows == [field.name for field in dataclasses.fields(AuditEvent)]
    assert list(AuditEvent("accepted", 200, "GET", "/", None).as_dict()) == rows  # record.cfaccess, for formatters


def test_every_cli_command_and_option_is_in_the_reference() -> None:
    text = page_text("reference/cli.md")
    missing = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if f"`cfaccess-mw {prefix}{name}" not in text:
                        missing.append(f"{prefix}{name}")
                    walk(sub, f"{prefix}{name} ")
            elif action.help != argparse.SUPPRESS:
                shown = (option for option in action.option_strings if option not in ("-h", "--help"))
                missing.extend(f"{prefix}{o}" for o in shown if not re.search(rf"`[^`]*{re.escape(o)}\b", text))

    walk(build_parser(), "")
    assert missing == []


def test_every_page_is_in_the_sites_navigation() -> None:
    nav = yaml.safe_load((readme.ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    listed = set(re.findall(r"'([\w/.-]+\.md)'", repr(nav)))

    assert listed == {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")}


def test_the_readmes_links_into_the_site_resolve() -> None:
    """README.md links into docs/ (GitHub follows them as files): each page exists, each anchor is a heading."""
    from markdown.extensions.toc import slugify  # what mkdocs' toc names headings with

    links = re.findall(r"\]\(docs/([\w/.-]+\.md)(?:#([\w-]+))?\)", readme.README.read_text(encoding="utf-8"))
    broken = []
    for page, anchor in links:
        path = DOCS / page
        headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE) if path.exists() else []
        if not path.exists() or (anchor and anchor not in {slugify(h, "-") for h in headings}):
            broken.append(f"docs/{page}#{anchor}")

    assert len(links) >= 20
    assert broken == []
