#!/usr/bin/env python3
"""Developer entry point that needs nothing but Python: it makes ``.venv`` and installs what it needs.

    python3 dev.py demo          # run the demo app behind the middleware, with curl lines to paste
    python3 dev.py test          # run the whole test suite (what CI runs)
    python3 dev.py lint          # ruff and mypy
    python3 dev.py test --python 3.13   # the same under another interpreter (its own venv)
    python3 dev.py test --cov    # the same under coverage (CI's last step), then the report

Extra arguments after the command go to the tool (``python3 dev.py test -k websocket``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _venv_dir(python: str | None) -> Path:
    return ROOT / (".venv" if python is None else f".venv-{python}")


def _find_python(version: str) -> str:
    """An interpreter for ``version``: pyenv's own install first (its shims fail for unselected versions), then PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    matches = sorted(pyenv.glob(f"{version}.*/bin/python3")) if pyenv.is_dir() else []
    if matches:
        return str(matches[-1])
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-c", ""], capture_output=True).returncode == 0:
        return found
    raise SystemExit(f"dev.py: no working Python {version} on PATH or under {pyenv}")


def ensure_env(python: str | None = None) -> Path:
    """Create the venv and install the project with its dev extras, once per change of pyproject.toml."""
    env = _venv_dir(python)
    bin_dir = env / ("Scripts" if os.name == "nt" else "bin")
    stamp = env / ".installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return bin_dir
    if python is None:
        if not (bin_dir / "python").exists():
            print(f"dev.py: creating {env.name} ...", flush=True)
            venv.EnvBuilder(with_pip=True, clear=True).create(env)
    elif not (bin_dir / "python").exists():
        print(f"dev.py: creating {env.name} with Python {python} ...", flush=True)
        subprocess.run([_find_python(python), "-m", "venv", "--clear", str(env)], check=True)
    print("dev.py: installing cfaccess_mw with its dev extras ...", flush=True)
    pip = [str(bin_dir / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev]"], check=True)
    stamp.write_text(wanted)
    return bin_dir


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    python = None
    if len(rest) >= 2 and rest[0] == "--python":
        python, rest = rest[1], rest[2:]
    bin_dir = ensure_env(python)
    py = str(bin_dir / "python")
    os.chdir(ROOT)
    if command == "test":
        if "--cov" in rest:
            # coverage run, not pytest-cov: our pytest plugin (an entry point) is imported before pytest-cov
            # starts, which would count every module's import-time lines as never run.
            rest = [arg for arg in rest if arg != "--cov" and not arg.startswith("--cov-report")]
            code = subprocess.call([py, "-m", "coverage", "run", "-m", "pytest", *rest])
            return code or subprocess.call([py, "-m", "coverage", "report"])
        return subprocess.call([py, "-m", "pytest", *rest])
    if command == "lint":
        paths = [
            p
            for p in ("cfaccess_mw", "tests", "examples", "benchmarks", "fuzz", ".ci", "dev.py")
            if (ROOT / p).exists()
        ]
        code = subprocess.call([py, "-m", "ruff", "check", *paths])
        code |= subprocess.call([py, "-m", "ruff", "format", "--check", *paths])
        code |= subprocess.call([py, "-m", "mypy", *rest])
        return code
    if command == "demo":
        return subprocess.call([py, "-m", "examples.demo", *rest])
    print(f"dev.py: unknown command {command!r}; try: demo, test, lint", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
