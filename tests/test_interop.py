"""Interop vectors: the committed interop/ tree is exactly what the implementation
generates, every vector verifies, and any one-byte change to any input is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ambient_p2p import interop
from ambient_p2p.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vectors")
    n = interop.generate(root)
    assert n > 0
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_all_generated_vectors_verify(generated: Path) -> None:
    results = interop.verify(generated)
    bad = [r for r in results if not r.ok]
    assert results and not bad, bad[:5]


def test_committed_vectors_match_implementation(generated: Path) -> None:
    committed = REPO / "interop"
    fresh = _tree(generated)
    ours = {k: v for k, v in _tree(committed).items() if k.split("/")[0] in interop.format_modules()}
    missing = sorted(set(fresh) - set(ours))
    stale = sorted(set(ours) - set(fresh))
    changed = sorted(k for k in set(fresh) & set(ours) if fresh[k] != ours[k])
    assert not (missing or stale or changed), (
        f"interop/ is out of date (run: ambient-p2p interop generate interop): "
        f"missing={missing[:3]} stale={stale[:3]} changed={changed[:3]}"
    )


def test_vector_set_covers_required_cases(generated: Path) -> None:
    metas = {str(p.parent.relative_to(generated)): json.loads(p.read_text()) for p in generated.rglob("meta.json")}
    rejects = {k for k, m in metas.items() if k.startswith("codec/reject/")}
    assert len(rejects) >= 20
    for name in ("valid-vote", "wrong-domain", "wrong-key", "malleated"):
        assert f"crypto/signature/{name}" in metas
    assert sum(k.startswith("crypto/ed25519-rfc8032/") for k in metas) >= 4
    for k, m in metas.items():
        has_output = (generated / k / "output.json").exists()
        assert (m["expect"] == "accept") == has_output


def _all_cases() -> list[tuple[str, str, str]]:
    out = []
    for fmt, mod in interop.format_modules().items():
        for case in mod.cases():
            out.append((fmt, case.handler, case.name))
    return out


@pytest.mark.parametrize(("fmt", "handler", "name"), _all_cases(), ids=lambda x: x)
def test_flipping_any_input_byte_fails_that_case(generated: Path, tmp_path: Path, fmt: str, handler: str, name: str) -> None:
    src = generated / fmt / handler / name
    dst = tmp_path / fmt / handler / name
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    meta = json.loads((dst / "meta.json").read_text())
    inp = dst / meta["input"]
    data = bytearray(inp.read_bytes())
    if not data:
        data = bytearray(b"\x00")  # the empty-input case: any byte is a change
    else:
        data[len(data) // 2] ^= 0x01
    inp.write_bytes(bytes(data))
    results = interop.verify(tmp_path)
    assert len(results) == 1 and not results[0].ok
    assert results[0].message  # says what is wrong


def test_verify_skips_folders_that_are_not_vector_formats(
    generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """interop/ also holds the TypeScript verifier; once `npm ci` has filled its node_modules/
    (folders three deep, like cases), `interop verify` must not read them as vectors."""
    root = tmp_path / "interop"
    shutil.copytree(generated, root)
    stray = root / "verifier-ts" / "node_modules" / "cbor2" / "lib"
    stray.mkdir(parents=True)
    (stray / "index.js").write_text("export {};\n")
    (root / "verifier-ts" / "src").mkdir()
    (root / "README.md").write_text("# vectors\n")
    n = sum(1 for _ in generated.rglob("meta.json"))

    assert interop.non_format_dirs(root) == ["verifier-ts"]
    results = interop.verify(root)
    assert len(results) == n and all(r.ok for r in results)
    assert not any(r.path.startswith("verifier-ts") for r in results)

    assert main(["interop", "verify", str(root)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{n} passed, 0 failed"
    assert "skipped verifier-ts/" in err and "FAIL" not in err

    # a real case of a real format is still checked next to the stray folder
    meta = next(root.glob("crypto/signature/*/meta.json"))
    inp = meta.parent / json.loads(meta.read_text())["input"]
    inp.write_bytes(inp.read_bytes() + b" ")
    assert main(["interop", "verify", str(root)]) == 1
    assert f"FAIL {meta.parent.relative_to(root)}" in capsys.readouterr().err
