#!/usr/bin/env bash
# Fuzz token verification for a while (default 20 s): fuzz/run.sh [seconds]
# Installs atheris into the project's .venv if it can; where it cannot (no wheel for this Python
# and no compiler), says so and exits 0, so CI can always call this.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
python="${FUZZ_PYTHON:-.venv/bin/python}"
if ! "$python" -c "import atheris" 2>/dev/null; then
  if ! "$python" -m pip install --disable-pip-version-check -q atheris >/dev/null 2>&1; then
    echo "fuzz: atheris does not install for $("$python" -V 2>&1); skipping the fuzz run"
    exit 0
  fi
fi
mkdir -p fuzz/artifacts
corpus="$(mktemp -d)"  # libFuzzer adds to its first corpus directory: keep fuzz/seeds as committed
trap 'rm -rf "$corpus"' EXIT
cp fuzz/seeds/* "$corpus"/
PYTHONPATH=. "$python" fuzz/fuzz_tokens.py "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=fuzz/artifacts/ -print_final_stats=1
