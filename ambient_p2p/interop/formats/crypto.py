"""Crypto vectors (spec/crypto.md).

``ed25519-rfc8032/<case>``: RFC 8032 section 7.1 vectors; input.json {secret, pubkey,
message, signature} (hex). Accept iff the secret derives the pubkey, signing the message
gives exactly the signature, and it verifies.
``signature/<case>``: domain-separated Ambient signatures; input.json {pubkey (base58),
purpose, message (hex), signature (hex)}. Output gives the exact bytes that were signed.
``keypair/<case>``: Solana CLI keypair files; output is the base58 address.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ...core import crypto
from .. import Case, Rejected

FORMAT = "crypto"

# RFC 8032 section 7.1: TEST 1, TEST 2, TEST 3 and TEST SHA(abc) (secret, public, message, signature).
RFC8032_VECTORS: list[tuple[str, str, str, str, str]] = [
    (
        "test-1",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "test-2",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "test-3",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "test-sha-abc",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        hashlib.sha512(b"abc").hexdigest(),
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]

#: The ed25519 group order L; adding it to S gives the classic malleated signature.
ED25519_L = 2**252 + 27742317777372353535851937790883648493


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _load(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected("malformed", f"input is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Rejected("malformed", "input must be a JSON object")
    return obj


def _hex(obj: dict[str, Any], key: str) -> bytes:
    try:
        return bytes.fromhex(obj[key])
    except (KeyError, TypeError, ValueError):
        raise Rejected("malformed", f"field {key!r} missing or not hex") from None


def run(handler: str, data: bytes) -> Any:
    if handler == "ed25519-rfc8032":
        v = _load(data)
        secret, pub, msg, sig = (_hex(v, k) for k in ("secret", "pubkey", "message", "signature"))
        try:
            kp = crypto.Keypair.from_seed(secret)
        except crypto.CryptoError as exc:
            raise Rejected("bad-key", str(exc)) from None
        if kp.pubkey != pub:
            raise Rejected("bad-key", "secret does not derive pubkey")
        if kp.sign_raw(msg) != sig:
            raise Rejected("bad-signature", "signing the message does not give the signature")
        if not crypto.verify_raw(pub, msg, sig):
            raise Rejected("bad-signature", "signature does not verify")
        return {"valid": True}
    if handler == "signature":
        v = _load(data)
        try:
            pub = crypto.decode_address(str(v.get("pubkey", "")))
        except crypto.CryptoError as exc:
            raise Rejected("bad-key", str(exc)) from None
        purpose = v.get("purpose")
        if not isinstance(purpose, str) or purpose not in crypto.SIGNING_PURPOSES:
            raise Rejected("unknown-purpose", f"purpose {purpose!r} is not a signing purpose")
        msg, sig = _hex(v, "message"), _hex(v, "signature")
        if not crypto.verify(pub, purpose, msg, sig):
            raise Rejected("bad-signature", f"signature does not verify for purpose {purpose!r}")
        return {"valid": True, "signed_bytes": crypto.signing_message(purpose, msg).hex()}
    if handler == "keypair":
        try:
            kp = crypto.Keypair.from_solana_json(data)
        except crypto.CryptoError as exc:
            raise Rejected("bad-keypair", str(exc)) from None
        return {"address": kp.address}
    raise Rejected("unknown-handler", handler)


def _sig_case(name: str, desc: str, pub: bytes, purpose: str, msg: bytes, sig: bytes, ok: bool, reason: str | None) -> Case:
    inp = {"pubkey": crypto.encode_address(pub), "purpose": purpose, "message": msg.hex(), "signature": sig.hex()}
    out = {"valid": True, "signed_bytes": crypto.signing_message(purpose, msg).hex()} if ok else None
    return Case("signature", name, _json(inp), out, desc, reason=None if ok else reason, input_file="input.json")


def cases() -> list[Case]:
    out = []
    for name, sk, pk, msg_hex, sig_hex in RFC8032_VECTORS:
        inp = {"secret": sk, "pubkey": pk, "message": msg_hex, "signature": sig_hex}
        out.append(Case("ed25519-rfc8032", name, _json(inp), {"valid": True}, f"RFC 8032 7.1 {name}", input_file="input.json"))

    alice = crypto.Keypair.deterministic("vectors/alice")
    bob = crypto.Keypair.deterministic("vectors/bob")
    msg = b"slot 42 is mine"
    sig = alice.sign("vote", msg)
    s = int.from_bytes(sig[32:], "little")
    malleated = sig[:32] + (s + ED25519_L).to_bytes(32, "little")
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    small_order = bytes([1]) + bytes(31)  # the identity point: a small-order public key
    out += [
        _sig_case("valid-vote", "alice signs a vote message", alice.pubkey, "vote", msg, sig, True, None),
        _sig_case(
            "valid-empty-message",
            "an empty message for purpose test",
            alice.pubkey,
            "test",
            b"",
            alice.sign("test", b""),
            True,
            None,
        ),
        _sig_case(
            "wrong-domain",
            "a vote signature presented as a pol-verdict",
            alice.pubkey,
            "pol-verdict",
            msg,
            sig,
            False,
            "bad-signature",
        ),
        _sig_case("wrong-key", "alice's signature checked against bob", bob.pubkey, "vote", msg, sig, False, "bad-signature"),
        _sig_case(
            "malleated",
            "S replaced by S + L (non-canonical scalar)",
            alice.pubkey,
            "vote",
            msg,
            malleated,
            False,
            "bad-signature",
        ),
        _sig_case("bit-flip", "first signature byte flipped", alice.pubkey, "vote", msg, flipped, False, "bad-signature"),
        _sig_case(
            "undomained",
            "a plain ed25519 signature over the message without the domain prefix",
            alice.pubkey,
            "vote",
            msg,
            alice.sign_raw(msg),
            False,
            "bad-signature",
        ),
        _sig_case(
            "unknown-purpose",
            "purpose not in the registry",
            alice.pubkey,
            "transfer",
            msg,
            sig,
            False,
            "unknown-purpose",
        ),
        _sig_case(
            "small-order-key",
            "the identity point as public key",
            small_order,
            "vote",
            msg,
            sig,
            False,
            "bad-signature",
        ),
    ]
    good_kp = alice.to_solana_json().encode()
    out.append(Case("keypair", "solana-format", good_kp, {"address": alice.address}, "64-byte Solana keypair file", input_file="input.json"))
    arr = list(alice.to_bytes())
    bad = {
        "short": (json.dumps(arr[:63]), "63 entries"),
        "out-of-range": (json.dumps([*arr[:63], 256]), "an entry of 256"),
        "mismatched-pubkey": (json.dumps(arr[:32] + list(bob.pubkey)), "public half belongs to another key"),
        "not-json": ("[1,2,", "truncated JSON"),
    }
    for name, (text, desc) in bad.items():
        out.append(Case("keypair", name, text.encode(), None, desc, reason="bad-keypair", input_file="input.json"))
    return out
