"""Keys, domain-separated signatures, Solana keypair files (spec/crypto.md)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import crypto
from ambient_p2p.interop.formats.crypto import ED25519_L, RFC8032_VECTORS

PURPOSES = sorted(crypto.SIGNING_PURPOSES)


@pytest.mark.parametrize(("name", "sk", "pk", "msg", "sig"), RFC8032_VECTORS, ids=[v[0] for v in RFC8032_VECTORS])
def test_rfc8032_section_7_1(name: str, sk: str, pk: str, msg: str, sig: str) -> None:
    kp = crypto.Keypair.from_seed(bytes.fromhex(sk))
    assert kp.pubkey.hex() == pk
    assert kp.sign_raw(bytes.fromhex(msg)).hex() == sig
    assert crypto.verify_raw(bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig))
    assert not crypto.verify_raw(bytes.fromhex(pk), bytes.fromhex(msg) + b"x", bytes.fromhex(sig))


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=200),
       p1=st.sampled_from(PURPOSES), p2=st.sampled_from(PURPOSES))
def test_signature_never_verifies_for_another_purpose(seed: bytes, msg: bytes, p1: str, p2: str) -> None:
    kp = crypto.Keypair.from_seed(seed)
    sig = kp.sign(p1, msg)
    assert crypto.verify(kp.pubkey, p1, msg, sig)
    assert crypto.verify(kp.pubkey, p2, msg, sig) == (p1 == p2)
    assert not crypto.verify_raw(kp.pubkey, msg, sig)  # never valid without the domain


def test_domains_are_prefix_free() -> None:
    doms = [crypto.signing_domain(p) for p in PURPOSES]
    for a in doms:
        assert a.startswith(b"ambient/") and a.endswith(b"/v1\x00")
        for b in doms:
            assert a == b or not b.startswith(a)


def test_unknown_purpose_refused() -> None:
    kp = crypto.Keypair.deterministic("t")
    with pytest.raises(crypto.CryptoError):
        kp.sign("transfer", b"x")
    assert not crypto.verify(kp.pubkey, "transfer", b"x", bytes(64))


def test_malleated_and_malformed_signatures_rejected() -> None:
    kp = crypto.Keypair.deterministic("t")
    sig = kp.sign("vote", b"m")
    s = int.from_bytes(sig[32:], "little")
    assert not crypto.verify(kp.pubkey, "vote", b"m", sig[:32] + (s + ED25519_L).to_bytes(32, "little"))
    assert not crypto.verify(kp.pubkey, "vote", b"m", sig[:63])
    assert not crypto.verify(kp.pubkey[:31], "vote", b"m", sig)
    assert not crypto.verify(bytes([1]) + bytes(31), "vote", b"m", sig)  # small-order key
    assert not crypto.verify(b"\xff" * 32, "vote", b"m", sig)  # not a curve point


def test_deterministic_keys() -> None:
    a = crypto.Keypair.deterministic("lbl", 3)
    assert a == crypto.Keypair.deterministic("lbl", 3)
    assert a != crypto.Keypair.deterministic("lbl", 4)
    assert a != crypto.Keypair.deterministic("lbl2", 3)
    assert crypto.Keypair.generate() != crypto.Keypair.generate()
    assert "seed" not in repr(a) and a.seed.hex() not in repr(a)


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32))
def test_solana_keypair_json_roundtrip(seed: bytes) -> None:
    kp = crypto.Keypair.from_seed(seed)
    arr = json.loads(kp.to_solana_json())
    assert len(arr) == 64 and all(0 <= x <= 255 for x in arr)
    assert bytes(arr[:32]) == seed and bytes(arr[32:]) == kp.pubkey
    assert crypto.Keypair.from_solana_json(kp.to_solana_json()) == kp
    assert crypto.decode_address(kp.address) == kp.pubkey


def test_keypair_file_readable_by_solana_tooling(tmp_path: os.PathLike[str]) -> None:
    """solders (the Solana SDK's Python binding) reads our files and we read its output."""
    from solders.keypair import Keypair as SoldersKeypair

    kp = crypto.Keypair.deterministic("solana-compat")
    path = os.path.join(tmp_path, "id.json")
    crypto.write_keypair_file(path, kp)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    theirs = SoldersKeypair.from_json(Path(path).read_text())
    assert str(theirs.pubkey()) == kp.address
    other = SoldersKeypair()
    assert crypto.Keypair.from_solana_json(other.to_json()).address == str(other.pubkey())
    with pytest.raises(crypto.CryptoError, match="already exists"):
        crypto.write_keypair_file(path, crypto.Keypair.generate())
    assert crypto.read_keypair_file(path) == kp  # refused overwrite left it intact


@pytest.mark.parametrize(
    "text",
    ["", "[]", "{}", "[1,2", json.dumps(list(range(63))), json.dumps([0] * 63 + [256]),
     json.dumps([0.5] * 64), json.dumps([True] * 64), json.dumps(["1"] * 64)],
)
def test_bad_keypair_files_rejected(text: str) -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.Keypair.from_solana_json(text)


def test_keypair_with_mismatched_public_half_rejected() -> None:
    a, b = crypto.Keypair.deterministic("a"), crypto.Keypair.deterministic("b")
    with pytest.raises(crypto.CryptoError, match="does not match"):
        crypto.Keypair.from_bytes(a.seed + b.pubkey)


@pytest.mark.parametrize("text", ["", "0OIl", "abc", "1" * 60, "ExhF6vV5AXgq3CfgMERxemXnaZ1JQSTz7D", "ExhF6vV5AXgq3CfgMERxemXnaZ1JQSTz7DcXQ1Eo7ncsExhF"])
def test_bad_addresses_rejected(text: str) -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.decode_address(text)


def test_sha256_is_hashv() -> None:
    import hashlib

    assert crypto.sha256(b"ab", b"c") == hashlib.sha256(b"abc").digest()
    assert crypto.sha256() == hashlib.sha256().digest()
