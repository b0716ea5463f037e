#!/usr/bin/env bash
# The one command: build benchmarks/.venv-peers (Python 3.12 or newer, which fastapi-cloudflare-access-jwt
# needs) with this project and its `bench` extra (uvicorn, FastAPI and the two peers), then run every
# section in it and print the table. Arguments go to `python -m benchmarks.run` (e.g. --quick).
#   benchmarks/run.sh            # full run, a few minutes on 2 cores
#   benchmarks/run.sh --quick    # smoke run, under a minute
# Set PYTHON=/path/to/python3.12 to choose the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/benchmarks/.venv-peers"

find_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  for candidate in python3.13 python3.12; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$candidate"; return
    fi
  done
  for candidate in "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3; do
    if [[ -x "$candidate" ]]; then echo "$candidate"; return; fi
  done
}

if [[ ! -x "$VENV/bin/python" ]]; then
  PY="$(find_python)"
  if [[ -z "$PY" ]]; then
    echo "run.sh: no Python 3.12+ found (set PYTHON=...); fastapi-cloudflare-access-jwt needs it" >&2
    exit 2
  fi
  echo "run.sh: creating $VENV with $("$PY" -V)" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.installed"
WANTED="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANTED" ]]; then
  echo "run.sh: installing cfaccess_mw[bench] into $VENV ..." >&2
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install -e "$ROOT[bench]"
  # flask-cfaccess pins Flask ~=2.2.3 and PyJWT ~=2.6.0, which no resolution shares with this project: installed
  # without its dependencies, for benchmarks.wsgi's peer rows only (benchmarks/flask_peers.py says how it is fed).
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install --no-deps flask-cfaccess==0.1.1
  echo "$WANTED" > "$STAMP"
fi
cd "$ROOT"
export BENCH_COMMAND="benchmarks/run.sh${*:+ $*}"
if [[ "${1:-}" == "wsgi" ]]; then  # benchmarks/run.sh wsgi [--ab REV]: the sync path against the Flask peers
  shift
  exec "$VENV/bin/python" -m benchmarks.wsgi "$@"
fi
exec "$VENV/bin/python" -m benchmarks.run "$@"
