"""The second, independent implementation: the TypeScript verifier in interop/verifier-ts/
(written from spec/ and the vectors only, never from ambient_p2p/) checks every case of the
committed interop/ tree, and a changed vector makes it fail that case.

Needs `node` (>= 20) and npm; installs interop/verifier-ts/package-lock.json with `npm ci` on
first use (the registry must be reachable then), as tests/test_net_interop_js.py does."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT / "interop"
TS = INTEROP / "verifier-ts"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node/npm are not installed: the TypeScript verifier cannot run",
)

# Every handler the TypeScript verifier implements today: one missing from its report is a
# regression, not "not implemented".
IMPLEMENTED = {
    "auction/bid-commitment",
    "auction/close_auction",
    "auction/commit_bid",
    "auction/expire",
    "auction/post_result",
    "auction/post_route",
    "auction/register_miner",
    "auction/request",
    "auction/reveal_bid",
    "auction/settle",
    "auction/verdict",
    "bank/account-hash",
    "bank/genesis",
    "bank/slot",
    "bank/svm-slot",
    "blobs/answer",
    "blobs/parse-token-blob",
    "blobs/token-blob",
    "codec/reject",
    "codec/roundtrip",
    "crypto/ed25519-rfc8032",
    "crypto/keypair",
    "crypto/signature",
    "difficulty/adjust",
    "difficulty/escape",
    "duplicate/proof",
    "genesis/derive",
    "gossip/envelope",
    "join/chunk",
    "join/genesis-answer",
    "join/trust",
    "lstake/formula",
    "lstake/leader-schedule",
    "pol/commitment",
    "pol/fingerprint",
    "pol/opening",
    "poh/entries",
    "poh/hash_n",
    "poh/mixin",
    "rewards/epoch-split",
    "rewards/schedule",
    "shard/blame",
    "shard/commitment",
    "shard/quantize",
    "shard/split",
    "shred/make",
    "shred/merkle",
    "shred/parse",
    "shred/recover",
    "shred/rs",
    "tower/fork-choice",
    "tower/switch-stake",
    "tower/vote-sequence",
    "vote/vote-land",
    "vote/vote-tx",
    "work/calls",
    "work/epoch-boundary",
}

# One accept case per format whose input a one-byte change must make the verifier fail on
# semantics alone (the input_sha256 in meta.json is recomputed, so the guard cannot catch it).
SEMANTIC_FLIPS = {
    "auction": "auction/request/opens",
    "bank": "bank/slot/transfer",
    "blobs": "blobs/answer/ok",
    "codec": "codec/roundtrip/node-info",
    "crypto": "crypto/signature/valid-vote",
    "difficulty": "difficulty/escape/one-of-64-start",
    "duplicate": "duplicate/proof/index-past-last",
    "genesis": "genesis/derive/skewed",
    "gossip": "gossip/envelope/votes",
    "join": "join/trust/three-of-four",
    "lstake": "lstake/leader-schedule/equal-4",
    "poh": "poh/hash_n/n1000_00",
    "pol": "pol/commitment/greedy_12_tokens",
    "rewards": "rewards/epoch-split/three-pools",
    "shard": "shard/commitment/stage-1",
    "shred": "shred/parse/data_first",
    "tower": "tower/switch-stake/third-fork-counts",
    "vote": "vote/vote-tx/valid",
    "work": "work/epoch-boundary/pays-epoch-3",
}


@pytest.fixture(scope="module")
def verifier() -> Path:
    if not (TS / "node_modules" / "cbor2").exists():
        r = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=TS, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["npm", "run", "--silent", "build"], cwd=TS, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, "tsc (strict) failed:\n" + r.stdout + r.stderr
    return TS / "dist" / "main.js"


def _run(main: Path, root: Path) -> tuple[int, dict[str, Any]]:
    r = subprocess.run(["node", str(main), str(root), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def _failed(report: dict[str, Any]) -> dict[str, str]:
    return {f"{e['format']}/{e['handler']}/{f['case']}": f["why"] for e in report["report"] for f in e["failed"]}


def test_ts_verifier_passes_every_committed_case(verifier: Path) -> None:
    rc, report = _run(verifier, INTEROP)
    assert _failed(report) == {} and rc == 0
    assert report["not_implemented"] == []  # every handler of every format has a TypeScript side
    seen = {f"{e['format']}/{e['handler']}": e for e in report["report"]}
    assert set(seen) >= IMPLEMENTED, sorted(IMPLEMENTED - set(seen))
    # every case directory was checked (none skipped by the walker)
    for key, entry in seen.items():
        cases = [p for p in (INTEROP / key).iterdir() if p.is_dir()]
        assert entry["cases"] == len(cases) == entry["passed"] > 0, key


def _copy_case(case: str, dst_root: Path) -> Path:
    dst = dst_root / case
    shutil.copytree(INTEROP / case, dst)
    return dst


def _flip_input(case_dir: Path, fix_sha: bool) -> None:
    meta = json.loads((case_dir / "meta.json").read_text())
    path = case_dir / meta["input"]
    data = bytearray(path.read_bytes())
    if path.suffix == ".json":
        text = data.decode()
        hexrun = re.search(r"[0-9a-f]{32,}", text)
        cap = re.search(r'"(?:capitalization|falsified)": (\d+)', text)
        if hexrun is None and cap is not None:  # reward / difficulty inputs hold no hex: twice the lamports, more false tokens
            text = text[: cap.start(1)] + str(int(cap.group(1)) * 2 + 1) + text[cap.end(1) :]
        elif hexrun is None:  # tower inputs hold no hex: move the last vote to another slot
            assert '"last_vote": 2' in text
            text = text.replace('"last_vote": 2', '"last_vote": 5')
        else:  # change one hex digit of the first long hex string: still valid JSON, other value
            i = hexrun.start()
            text = text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1 :]
        data = bytearray(text.encode())
    else:
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    if fix_sha:
        meta["input_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
        (case_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def _edit_output(case_dir: Path) -> None:
    out = json.loads((case_dir / "output.json").read_text())

    def bump(x: Any) -> tuple[Any, bool]:
        if isinstance(x, bool):
            return (not x), True
        if isinstance(x, int):
            return x + 1, True
        if isinstance(x, str) and x:
            return x[:-1] + ("0" if x[-1] != "0" else "1"), True
        if isinstance(x, list):
            for i, v in enumerate(x):
                x[i], done = bump(v)
                if done:
                    return x, True
        if isinstance(x, dict):
            for k in sorted(x):
                x[k], done = bump(x[k])
                if done:
                    return x, True
        return x, False

    out, done = bump(out)
    assert done
    (case_dir / "output.json").write_text(json.dumps(out, indent=2, sort_keys=True))


@pytest.mark.parametrize("mode", ["input-stale-sha", "input-semantic", "output-edited"])
def test_ts_verifier_fails_a_changed_vector_of_every_format(verifier: Path, tmp_path: Path, mode: str) -> None:
    root = tmp_path / "interop"
    for case in SEMANTIC_FLIPS.values():
        d = _copy_case(case, root)
        if mode == "output-edited":
            _edit_output(d)
        else:
            _flip_input(d, fix_sha=mode == "input-semantic")
    rc, report = _run(verifier, root)
    failed = _failed(report)
    assert rc == 1
    assert set(failed) == set(SEMANTIC_FLIPS.values()), sorted(set(SEMANTIC_FLIPS.values()) - set(failed))
    if mode == "input-semantic":
        assert not any("input_sha256" in why for why in failed.values()), failed


def test_ts_verifier_fails_a_must_reject_case_turned_accept(verifier: Path, tmp_path: Path) -> None:
    """A must-reject vector given an output.json (i.e. claimed valid) fails: the verifier really rejects it."""
    root = tmp_path / "interop"
    cases = [
        "codec/reject/non-shortest-int",
        "shred/parse/bad_proof_entry",
        "tower/vote-sequence/locked-out-fork",
        "auction/reveal_bid/weak-salt",
        "blobs/answer/wrong-hash",
        "blobs/parse-token-blob/too-many",
        "genesis/derive/zero-slot-epoch",
        "genesis/derive/lstake-overflow",
        "tower/fork-choice/unknown-duplicate",
        "gossip/envelope/replay",
        "gossip/envelope/stale",
        "duplicate/proof/relayed-copy-differs-only-in-retransmitter",
        "duplicate/proof/wrong-kind",
        "codec/reject/tx-batch-ack-mismatch",
        "join/genesis-answer/mismatch",
        "join/trust/two-of-four",
        "join/chunk/flipped",
        "shard/quantize/nan",
        "shard/split/no-work",
    ]
    for case in cases:
        d = _copy_case(case, root)
        meta = json.loads((d / "meta.json").read_text())
        meta["expect"] = "accept"
        (d / "meta.json").write_text(json.dumps(meta))
        (d / "output.json").write_text("{}")
    rc, report = _run(verifier, root)
    assert rc == 1 and set(_failed(report)) == set(cases)


def test_install_and_build_leave_git_status_clean(verifier: Path) -> None:
    """What `npm ci` and the build write (node_modules/, dist/) is git-ignored: after the
    fixture ran, no untracked path under interop/verifier-ts/ lies in either."""
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    assert verifier.exists() and (TS / "node_modules").is_dir()
    for written in (TS / "node_modules" / "cbor2" / "package.json", verifier):
        r = subprocess.run(["git", "check-ignore", "-q", str(written)], cwd=ROOT, capture_output=True)
        assert r.returncode == 0, f"{written.relative_to(ROOT)} is not git-ignored"
    st = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", str(TS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    written = [line for line in st if "/node_modules/" in line or "/dist/" in line]
    assert written == [], written


def test_ts_verifier_passes_an_extracted_release(verifier: Path, tmp_path: Path) -> None:
    """What an implementer downloads (interop/README.md "Releases"): the TypeScript verifier
    passes the extracted release tarball exactly as it passes the committed tree."""
    import tarfile

    from ambient_p2p import __version__
    from ambient_p2p.interop import release

    out = tmp_path / "release"
    tarball = release.write_release(INTEROP, out, __version__).tarball
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    (root,) = (tmp_path / "x").iterdir()
    release.check_tree(root)
    rc, report = _run(verifier, root)
    assert rc == 0 and _failed(report) == {}
    n = sum(1 for p in INTEROP.rglob("meta.json") if "verifier-ts" not in p.parts)
    assert sum(e["cases"] for e in report["report"]) == n


def test_ts_verifier_checks_an_svm_slot_without_an_svm(verifier: Path, tmp_path: Path) -> None:
    """bank/svm-slot: the verifier cannot execute SPL Token, but a stated post-state that breaks
    lamport or token conservation, or a bank hash that does not follow from it, fails."""
    root = tmp_path / "interop"
    src = INTEROP / "bank" / "svm-slot" / "token-flow"
    edits = {}
    for name in ("lamports", "token-amount", "bank-hash"):
        d = root / "bank" / "svm-slot" / f"token-flow-{name}"
        shutil.copytree(src, d)
        out = json.loads((d / "output.json").read_text())
        if name == "lamports":
            out["written"][0]["lamports"] += 1
        elif name == "token-amount":
            acct = next(a for a in out["written"] if len(a["data"]) == 2 * 165)
            data = bytearray.fromhex(acct["data"])
            data[64] ^= 1
            acct["data"] = data.hex()
        else:
            out["bank_hash"] = out["bank_hash"][:-1] + ("0" if out["bank_hash"][-1] != "0" else "1")
        (d / "output.json").write_text(json.dumps(out, indent=2, sort_keys=True))
        edits[f"bank/svm-slot/token-flow-{name}"] = name
    rc, report = _run(verifier, root)
    failed = _failed(report)
    assert rc == 1 and set(failed) == set(edits), failed
    assert "lamports changed" in failed["bank/svm-slot/token-flow-lamports"]
    assert "supply" in failed["bank/svm-slot/token-flow-token-amount"]
