"""Detection of every cheating-miner fault of devnet/miner_faults.py, in-process and with the
real embedded SmolLM2 (issue 13 acceptance: "a bf16 or int8 model, weights perturbed by 1e-3,
answers from a different prompt"). Each fault's proof is built by the same function the
faulty miner runs; the check is the one a drawn Logit Pool validator runs on it
(node/validator_pool.py ``_validate``: model/validate.py at the positions the draw gives it),
the evidence it would post is accepted by the program's structural check
(core/logit_pool.py ``evidence_error``) and a juror's re-check (``_judge``) finds it
fraudulent. The honest proof of the same prompt passes the same checks at the same positions,
so a rejection is the fault's doing, not the check's. The multi-process runs of the same
faults are in tests/test_logit_pool_multiproc.py (slow)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch", reason="the model extra (torch) is not installed")

from ambient_p2p.core import crypto, pol  # noqa: E402
from ambient_p2p.core import logit_pool as lp  # noqa: E402
from ambient_p2p.devnet import miner_faults as mf  # noqa: E402
from ambient_p2p.model import runner  # noqa: E402
from ambient_p2p.node.validator_pool import _judge, _validate  # noqa: E402

MINER = crypto.Keypair.deterministic("pool-faults-miner", 0)
#: three drawn validators (VALIDATORS_PER_QUERY), each with its own positions
VALIDATORS = [crypto.Keypair.deterministic("pool-faults-validator", i) for i in range(lp.VALIDATORS_PER_QUERY)]
BEACON = crypto.sha256(b"the poh hash of a slot after the result")
PROMPT = "What is the capital of France?"
#: the multi-process tests' MAX_TOKENS (tests/test_query_multiproc.py) is of this order
N_TOKENS = 12


@pytest.fixture(scope="module")
def lm() -> runner.LoadedModel:
    torch.set_num_threads(1)  # a shared 2-core machine
    return runner.load_model("default")


@pytest.fixture(scope="module")
def prompt(lm: runner.LoadedModel) -> list[int]:
    return lm.encode_prompt(PROMPT)


@pytest.fixture(scope="module")
def honest(lm: runner.LoadedModel, prompt: list[int]) -> pol.PolProof:
    proof, gen, _ = runner.prove(lm, MINER, prompt, N_TOKENS)
    assert proof.commitment.tier == pol.Tier.FP32 and len(gen.output) >= 2
    return proof


def altered(lm: runner.LoadedModel, fn: Callable[[object], None]) -> runner.LoadedModel:
    """A copy of ``lm`` with a model fault applied (the faulty miner alters its only copy)."""
    cheat = copy.deepcopy(lm)
    fn(cheat)
    return cheat


def cheating_proof(fault: str, lm: runner.LoadedModel, prompt: list[int], n: int) -> pol.PolProof:
    if fault == "other-prompt":
        return mf.other_prompt_proof(lm, MINER, prompt, n, tier=pol.Tier.FP32, temp_milli=0,
                                     sample_seed=pol.ZERO_HASH)
    cheat = altered(lm, mf.MODEL_FAULT_FN[fault])
    assert cheat.dtype == torch.float32  # the miner still declares the fp32 tier (node/miner.py)
    proof, _gen, _ = runner.prove(cheat, MINER, prompt, n, tier=pol.Tier.FP32)
    del cheat
    return proof


def pool_checks(lm: runner.LoadedModel, proof: pol.PolProof) -> list[tuple[list[int], pol.Check, pol.PolOpening | None]]:
    """What each drawn validator concludes, and the evidence it would post (validator_pool.check)."""
    cmt = proof.commitment
    out = []
    for v in VALIDATORS:
        positions = pol.select_positions(pol.challenge_seed(BEACON, v.pubkey, cmt.hash()), cmt.num_tokens,
                                         lp.POSITIONS_PER_VALIDATOR)
        openings = pol.open_positions(proof, positions)
        check, _s = _validate(lm, cmt, list(proof.prompt), list(proof.output), positions, openings)
        evidence = None
        if not check.ok:
            by_pos = {o.fp.pos: o for o in openings}
            evidence = by_pos.get(check.position if check.position is not None else -1, openings[0])
        out.append((positions, check, evidence))
    return out


def test_the_honest_proof_passes_every_drawn_validator(lm: runner.LoadedModel, honest: pol.PolProof) -> None:
    for _positions, check, evidence in pool_checks(lm, honest):
        assert check.ok and evidence is None, check


@pytest.mark.parametrize("fault", ["bf16-model", "int8-model", "other-prompt", "perturbed-model"])
def test_a_cheating_proof_is_rejected_by_every_drawn_validator_with_valid_evidence(
        lm: runner.LoadedModel, prompt: list[int], honest: pol.PolProof, fault: str) -> None:
    cheat = cheating_proof(fault, lm, prompt, honest.commitment.num_tokens)
    c = cheat.commitment
    # the cheat is well formed: same model id, tier, prompt and signer as the honest proof;
    # nothing but a forward pass can tell them apart
    h = honest.commitment
    assert (c.model_id, c.tier, c.prompt_hash, c.miner) == (h.model_id, h.tier, h.prompt_hash, h.miner)
    assert pol.check_commitment(c, expected_model_id=lm.model_id, expected_vocab=lm.vocab_size,
                                prompt=cheat.prompt, output=cheat.output).ok
    assert c.root != h.root
    for positions, check, evidence in pool_checks(lm, cheat):
        assert not check.ok, (fault, check)
        assert check.reason in (pol.Reason.VALUE_OUT_OF_TOLERANCE, pol.Reason.UNCOMMITTED_EXCEEDS,
                                pol.Reason.TOKEN_NOT_ARGMAX), check
        assert evidence is not None
        # the verdict's evidence passes the program's structural check ...
        assert lp.evidence_error(c, evidence, positions) is None
        # ... and every juror's forward pass finds the opening fraudulent (a reject whose
        # opening verified fine would itself be slashable)
        fraud, reason, _s = _judge(lm, c, list(cheat.prompt), list(cheat.output), evidence)
        assert fraud, (fault, reason)


def test_the_int8_quantization_is_q8_0(lm: runner.LoadedModel) -> None:
    """Every matrix block of 32 takes at most 255 distinct values spaced by its scale."""
    cheat = altered(lm, mf.quantize_int8)
    w = cheat.model.model.layers[0].mlp.down_proj.weight.detach().reshape(-1, mf.Q8_BLOCK)
    scale = w.abs().amax(dim=1, keepdim=True) / mf.Q8_MAX
    q = w / scale
    assert torch.allclose(q, torch.round(q), atol=1e-3)
    assert not torch.equal(w, lm.model.model.layers[0].mlp.down_proj.weight.detach().reshape(-1, mf.Q8_BLOCK))
    norm = cheat.model.model.layers[0].input_layernorm.weight
    assert torch.equal(norm, lm.model.model.layers[0].input_layernorm.weight)  # vectors kept


def test_the_bf16_model_really_runs_in_bf16(lm: runner.LoadedModel) -> None:
    cheat = altered(lm, mf.to_bf16)
    assert all(p.dtype == torch.bfloat16 for p in cheat.model.parameters())
    assert cheat.dtype == torch.float32  # what the miner reads to declare its tier
