"""PoL interop vectors: the committed interop/pol tree is what the implementation
generates, every vector verifies, and must-reject vectors fail for their stated reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ambient_p2p import interop
from ambient_p2p.interop.formats import pol as pol_format

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vectors")
    interop.generate(root)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_pol_vectors_verify(generated: Path) -> None:
    results = [r for r in interop.verify(generated) if r.path.startswith("pol/")]
    assert len(results) >= 20
    assert all(r.ok for r in results), [r for r in results if not r.ok]


def test_committed_pol_vectors_match(generated: Path) -> None:
    fresh = _tree(generated / "pol")
    committed = _tree(REPO / "interop" / "pol")
    assert fresh == committed, "interop/pol is stale: regenerate the vectors"


def test_each_reject_vector_has_its_reason(generated: Path) -> None:
    rejects = 0
    for _fmt, handler, cdir in interop.iter_case_dirs(generated):
        if _fmt != "pol" or (cdir / "output.json").exists():
            continue
        meta = json.loads((cdir / "meta.json").read_text())
        with pytest.raises(interop.Rejected) as exc:
            pol_format.run(handler, (cdir / meta["input"]).read_bytes())
        assert exc.value.reason == meta["reason"]
        rejects += 1
    assert rejects >= 10


def test_tampered_accept_vector_is_caught(generated: Path, tmp_path: Path) -> None:
    """Moving one committed token's logit in an accept vector (and fixing up the input hash
    so only the semantic check can notice) makes the vector fail."""
    import hashlib

    import numpy as np

    src = generated / "pol" / "opening" / "honest_pos0"
    dst = tmp_path / "honest_pos0"
    shutil.copytree(src, dst)
    obj = json.loads((dst / "input.json").read_text())
    logits = np.frombuffer(bytes.fromhex(obj["validator_logits_f32le"]), dtype="<f4").copy()
    expected = json.loads((dst / "output.json").read_text())
    assert expected["accept"] is True
    top = int(np.argsort(-logits)[1])
    logits[top] += np.float32(0.01)
    obj["validator_logits_f32le"] = logits.tobytes().hex()
    data = json.dumps(obj).encode()
    (dst / "input.json").write_bytes(data)
    meta = json.loads((dst / "meta.json").read_text())
    meta["input_sha256"] = hashlib.sha256(data).hexdigest()
    (dst / "meta.json").write_text(json.dumps(meta))
    problem = interop.verify_case(pol_format, "opening", dst)
    assert problem is not None and "value-out-of-tolerance" in problem
