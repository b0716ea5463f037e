"""The code blocks of README.md that a reader copies, found by what they start with.

``tests/test_readme.py`` runs them; ``.ci/run`` writes the quick start and its pytest file into a
directory outside the checkout (``python -m tests.readme DIR``) and runs them against the built wheel.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    """Every fenced block of ``language`` in README.md, in order."""
    return [body for lang, body in _BLOCK.findall(README.read_text(encoding="utf-8")) if lang == language]


def block_starting(first_line: str, language: str = "python") -> str:
    """The one ``language`` block whose first line starts with ``first_line``."""
    found = [body for body in blocks(language) if body.startswith(first_line)]
    if len(found) != 1:
        raise LookupError(f"README.md has {len(found)} {language} blocks starting {first_line!r}, not 1")
    return found[0]


def quick_start() -> str:
    """``myapp.py`` from the quick start."""
    return block_starting("# myapp.py\n")


def quick_start_test() -> str:
    """``test_myapp.py`` from "Testing your own app"."""
    return block_starting("# test_myapp.py\n")


def logging_setup() -> str:
    """The ``dictConfig`` example from "Logging"."""
    return block_starting("# logging set-up:")


def lookups() -> str:
    """The sqlite3 and SQLAlchemy lookups from "The user lookup"."""
    return block_starting("# lookups.py")


def write_app(directory: Path) -> None:
    """Save ``myapp.py`` and ``test_myapp.py`` into ``directory``, as a reader would."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "myapp.py").write_text(quick_start(), encoding="utf-8")
    (directory / "test_myapp.py").write_text(quick_start_test(), encoding="utf-8")


if __name__ == "__main__":
    write_app(Path(sys.argv[1]))
