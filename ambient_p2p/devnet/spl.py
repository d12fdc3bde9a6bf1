"""SPL Token traffic built with solders (tests, ``bench svm``, localnet load): the
instructions of the SPL Token and Associated Token Account programs that the genesis
programs run (core/svm.py), in their wire layouts (spl-token ``TokenInstruction``,
spl-associated-token-account ``AssociatedTokenAccountInstruction``), and readers of the
mint and token-account layouts (``Mint``: 82 bytes, supply u64 LE at 36; ``Account``: 165
bytes, mint at 0, owner at 32, amount u64 LE at 64)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..core.crypto import Keypair
from ..core.svm import SPL_ASSOCIATED_TOKEN_PROGRAM_ID, SPL_TOKEN_PROGRAM_ID, SYSTEM_PROGRAM_ID, rent_exempt_minimum

MINT_ACCOUNT_BYTES = 82
TOKEN_ACCOUNT_BYTES = 165
#: Lamports a mint account is created with: its rent-exempt minimum (1,461,600; spec/svm.md
#: "Rent"), as wallets fund it with getMinimumBalanceForRentExemption's answer
MINT_ACCOUNT_LAMPORTS = rent_exempt_minimum(MINT_ACCOUNT_BYTES)

# spl-token TokenInstruction tags
_INITIALIZE_MINT2 = 20
_MINT_TO = 7
_TRANSFER = 3
_BURN = 8
# system program instruction tags
_SYSTEM_CREATE_ACCOUNT = 0
_SYSTEM_TRANSFER = 2


def _ix(program: bytes, accounts: Sequence[tuple[bytes, bool, bool]], data: bytes) -> object:
    from solders.instruction import AccountMeta, Instruction
    from solders.pubkey import Pubkey

    return Instruction(Pubkey(program), data, [AccountMeta(Pubkey(k), s, w) for k, s, w in accounts])


def tx(payer: Keypair, instructions: Sequence[object], blockhash: bytes, signers: Sequence[Keypair] = ()) -> bytes:
    """A signed legacy wire transaction of ``instructions`` paid by ``payer``."""
    from solders.hash import Hash
    from solders.instruction import Instruction
    from solders.keypair import Keypair as SKeypair
    from solders.transaction import Transaction

    kps = [SKeypair.from_seed(k.seed) for k in (payer, *signers)]
    ixs = [ix for ix in instructions if isinstance(ix, Instruction)]
    return bytes(Transaction.new_signed_with_payer(ixs, kps[0].pubkey(), kps, Hash(blockhash)))


def system_transfer(src: bytes, dst: bytes, lamports: int) -> object:
    return _ix(SYSTEM_PROGRAM_ID, [(src, True, True), (dst, False, True)], struct.pack("<IQ", _SYSTEM_TRANSFER, lamports))


def create_mint(payer: bytes, mint: bytes, authority: bytes, decimals: int = 6) -> list[object]:
    """CreateAccount (owner SPL Token, 82 bytes) + InitializeMint2 (no freeze authority)."""
    create = _ix(SYSTEM_PROGRAM_ID, [(payer, True, True), (mint, True, True)],
                 struct.pack("<IQQ", _SYSTEM_CREATE_ACCOUNT, MINT_ACCOUNT_LAMPORTS, MINT_ACCOUNT_BYTES)
                 + SPL_TOKEN_PROGRAM_ID)
    init = _ix(SPL_TOKEN_PROGRAM_ID, [(mint, False, True)],
               bytes([_INITIALIZE_MINT2, decimals]) + authority + b"\x00")
    return [create, init]


def associated_token_address(owner: bytes, mint: bytes) -> bytes:
    from solders.pubkey import Pubkey
    from solders.token.associated import get_associated_token_address

    return bytes(get_associated_token_address(Pubkey(owner), Pubkey(mint)))


def create_ata(payer: bytes, owner: bytes, mint: bytes) -> object:
    """The ATA program's ``CreateIdempotent`` for ``owner``'s account of ``mint``."""
    ata = associated_token_address(owner, mint)
    return _ix(SPL_ASSOCIATED_TOKEN_PROGRAM_ID,
               [(payer, True, True), (ata, False, True), (owner, False, False), (mint, False, False),
                (SYSTEM_PROGRAM_ID, False, False), (SPL_TOKEN_PROGRAM_ID, False, False)], b"\x01")


def mint_to(mint: bytes, dst: bytes, authority: bytes, amount: int) -> object:
    return _ix(SPL_TOKEN_PROGRAM_ID, [(mint, False, True), (dst, False, True), (authority, True, False)],
               struct.pack("<BQ", _MINT_TO, amount))


def transfer(src: bytes, dst: bytes, owner: bytes, amount: int) -> object:
    return _ix(SPL_TOKEN_PROGRAM_ID, [(src, False, True), (dst, False, True), (owner, True, False)],
               struct.pack("<BQ", _TRANSFER, amount))


def burn(account: bytes, mint: bytes, owner: bytes, amount: int) -> object:
    return _ix(SPL_TOKEN_PROGRAM_ID, [(account, False, True), (mint, False, True), (owner, True, False)],
               struct.pack("<BQ", _BURN, amount))


def token_amount(data: bytes) -> int:
    """A token account's balance."""
    if len(data) < TOKEN_ACCOUNT_BYTES:
        raise ValueError("not a token account")
    return int(struct.unpack_from("<Q", data, 64)[0])


def mint_supply(data: bytes) -> int:
    if len(data) < MINT_ACCOUNT_BYTES:
        raise ValueError("not a mint")
    return int(struct.unpack_from("<Q", data, 36)[0])
