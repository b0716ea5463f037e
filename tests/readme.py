"""The code blocks of README.md and the documentation site (docs/) that a reader copies, found by what they start with.

``tests/test_readme.py`` runs the README's and the ones it names; ``tests/test_docs.py`` runs or checks every
block under docs/; ``.ci/run`` writes the quick start and its pytest file into a directory outside the checkout
(``python -m tests.readme DIR``) and runs them against the built wheel. Each text lives in one place: the site
includes the README's install, quick start and test file (pymdownx.snippets), so those are found in README.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def pages() -> list[Path]:
    """README.md and every page of the site, README first."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def page_blocks(page: Path) -> list[tuple[str, str]]:
    """Every fenced block of ``page`` as ``(language, body)``, in order."""
    return _BLOCK.findall(page.read_text(encoding="utf-8"))


def blocks(language: str, only: Path | None = None) -> list[str]:
    """Every fenced block of ``language`` in README.md and docs/ (or in the one page ``only``), in order."""
    return [body for page in ([only] if only else pages()) for lang, body in page_blocks(page) if lang == language]


def text() -> str:
    """README.md and every page of the site, one after another."""
    return "\n\n".join(page.read_text(encoding="utf-8") for page in pages())


def block_starting(first_line: str, language: str = "python") -> str:
    """The one ``language`` block, in README.md or docs/, whose first line starts with ``first_line``."""
    found = [body for body in blocks(language) if body.startswith(first_line)]
    if len(found) != 1:
        raise LookupError(f"README.md and docs/ have {len(found)} {language} blocks starting {first_line!r}, not 1")
    return found[0]


def quick_start() -> str:
    """``myapp.py`` from the quick start."""
    return block_starting("# myapp.py\n")


def quick_start_test() -> str:
    """``test_myapp.py`` from the quick start's "Test it"."""
    return block_starting("# test_myapp.py\n")


def logging_setup() -> str:
    """The ``dictConfig`` example from "Logging" (docs/deploying.md)."""
    return block_starting("# logging set-up:")


def lookups() -> str:
    """The sqlite3 and SQLAlchemy lookups from docs/user-lookup.md."""
    return block_starting("# lookups.py")


def write_app(directory: Path) -> None:
    """Save ``myapp.py`` and ``test_myapp.py`` into ``directory``, as a reader would."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "myapp.py").write_text(quick_start(), encoding="utf-8")
    (directory / "test_myapp.py").write_text(quick_start_test(), encoding="utf-8")


if __name__ == "__main__":
    write_app(Path(sys.argv[1]))
