"""Vote transactions: how a :class:`~ambient_p2p.core.consensus.Vote` travels and lands
(normative text: spec/bank.md "The vote program", spec/node.md "Votes").

A vote transaction is a Solana wire transaction, signed by the voter's identity (which
pays its fee), with exactly one instruction: program ``VOTE_PROGRAM_ID`` (Solana's vote
program address), one account (the voter, signer and writable), and as data the canonical
CBOR of the signed ``Vote`` (purpose ``vote``). Its recent blockhash is the voted slot's
blockhash, as agave's vote transactions do, so it can only land on a fork that holds the
voted slot (the bank then also checks the voted slot's bank hash).

Votes travel as these transactions on the votes gossip topic (agave gossips vote
transactions too): one object is both what fork choice counts and what a leader includes
in its block. :func:`parse_vote_transaction` is the check a gossip validator and a leader
run; the bank's vote instruction (core/bank.py) is the check replay runs.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bank import VOTE_PROGRAM_ID, BlockError, ParsedTx, parse_transaction
from .codec import DecodeError, decode, encode
from .consensus import Vote
from .constants import PACKET_DATA_BYTES
from .crypto import Keypair
from .errors import ProtocolError
from .messages import verify_message


class VoteTxError(ProtocolError, ValueError):
    """Not a valid vote transaction; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)


@dataclass(frozen=True)
class VoteTx:
    raw: bytes
    tx: ParsedTx
    vote: Vote


def vote_transaction(kp: Keypair, vote: Vote, recent_blockhash: bytes) -> bytes:
    """The wire transaction that carries ``vote`` (which ``kp`` has signed)."""
    from solders.hash import Hash
    from solders.instruction import AccountMeta, Instruction
    from solders.keypair import Keypair as SKeypair
    from solders.pubkey import Pubkey
    from solders.transaction import Transaction

    if vote.voter != kp.pubkey:
        raise ValueError("a vote transaction is signed by the voter")
    skp = SKeypair.from_seed(kp.seed)
    ix = Instruction(Pubkey(VOTE_PROGRAM_ID), encode(vote), [AccountMeta(skp.pubkey(), True, True)])
    return bytes(Transaction.new_signed_with_payer([ix], skp.pubkey(), [skp], Hash(bytes(recent_blockhash))))


def parse_vote_transaction(raw: bytes) -> VoteTx:
    """Parse and check a vote transaction's shape and both signatures (the transaction's
    and the vote's own). Raises :class:`VoteTxError`. Whether the vote can *land* depends
    on a bank (``Bank.vote_error``)."""
    if len(raw) > PACKET_DATA_BYTES:
        raise VoteTxError("oversized", f"{len(raw)} bytes, a vote transaction is at most {PACKET_DATA_BYTES}")
    try:
        tx = parse_transaction(raw, verify_signatures=True)
    except BlockError as exc:
        raise VoteTxError(exc.reason, exc.detail) from None
    if len(tx.signatures) != 1 or len(tx.instructions) != 1:
        raise VoteTxError("not-a-vote", "a vote transaction has one signature and one instruction")
    prog, accs, data = tx.instructions[0]
    if prog >= len(tx.account_keys) or tx.account_keys[prog] != VOTE_PROGRAM_ID:
        raise VoteTxError("not-a-vote", "the instruction is not for the vote program")
    if bytes(accs) != b"\x00" or not tx.writable[0]:
        raise VoteTxError("vote-bad-accounts", "the only instruction account must be the signing, writable voter")
    try:
        vote = decode(data, expected=Vote)
    except DecodeError as exc:
        raise VoteTxError("vote-bad-data", str(exc)) from None
    if vote.voter != tx.account_keys[0]:
        raise VoteTxError("vote-wrong-voter", "the vote's voter is not the transaction's signer")
    if not verify_message(vote, vote.voter, "vote"):
        raise VoteTxError("vote-bad-signature", "the vote's own signature does not verify")
    if vote.root is not None and vote.root > vote.slot:
        raise VoteTxError("vote-bad-root", f"root {vote.root} is above the voted slot {vote.slot}")
    return VoteTx(bytes(raw), tx, vote)
