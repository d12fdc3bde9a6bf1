"""A single-node leader that writes real slots into a blockstore (``ambient-p2p ledger
produce``): PoH ticks and transfer entries, 32:32 chained Merkle FEC sets signed by the
leader, inserted through the normal validated insert path (spec/replay.md, "Production").

The caller supplies the leader and the users whose transfers fill the slots; ``ledger
produce`` passes the deterministic single-leader ledger keys and genesis of
:mod:`ambient_p2p.devnet` (anyone can recompute them, so a produced ledger is for testing only).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core import codec, svm
from ..core.bank import Bank, child_bank
from ..core.constants import SHRED_VERSION, TXS_PER_ENTRY
from ..core.crypto import Keypair
from ..core.lstake import LStakeLedger, epoch_weights
from ..core.messages import Genesis
from ..core.poh import Entry, Poh, serialize_entries
from ..core.shred import SlotShredder
from .blockstore import Blockstore
from .meta import BankHashRecord
from .snapshot import bank_to_snapshot

GENESIS_FILE = "genesis.cbor"
#: Entries of a slot are shredded in this many batches (each ends with DATA_COMPLETE).
BATCHES_PER_SLOT = 2


def genesis_bank(genesis: Genesis) -> Bank:
    """Slot 0's bank of a chain: the genesis accounts and the genesis programs (SPL Token,
    Token-2022, ATA, Memo at their mainnet addresses, spec/svm.md)."""
    return Bank.genesis(genesis.hash(), {a.pubkey: a.lamports for a in genesis.accounts},
                        genesis.bootstrap_nodes[0].identity, genesis.hash(),
                        slots_per_epoch=genesis.epoch.slots_per_epoch, programs=svm.genesis_programs())


def uncredited_vote_weights(genesis: Genesis) -> Callable[[int], dict[bytes, int]]:
    """Vote weights of a chain that no node's ScheduleBook credits (``ledger produce``: one
    leader, no votes, nothing rooted): the LStake of a ledger with no work credit
    (core/lstake.py ``epoch_weights``), genesis LStake decaying out."""
    ledger = LStakeLedger.from_genesis(genesis)
    return lambda epoch: epoch_weights(genesis, ledger, epoch)


def open_bank(genesis: Genesis, parent: Bank, slot: int, leader: bytes) -> Bank:
    """The child bank of ``slot`` on ``parent``, as every producer and replayer of a chain
    opens it (core/bank.py ``child_bank``: the epoch-boundary rewards are paid in the first
    bank of an epoch, spec/rewards.md "In the bank"). The vote weights are the parent's
    ``lstake_provider``: a node sets it to its ``ScheduleBook.vote_weights`` on the bank it
    restarts from (node/validator.py ``aload``; ``ledger verify`` of a validator ledger
    likewise) and every child inherits it, so the leader and replay read the same source.
    A chain without one (``ledger produce`` and its verify) uses
    :func:`uncredited_vote_weights`. Raises ValueError when the weights are not known."""
    weights = parent.lstake_provider or uncredited_vote_weights(genesis)
    bank = child_bank(parent, slot, leader, genesis.poh.slot_duration_us, weights)
    bank.genesis_time_s = genesis.creation_time_s  # the Clock sysvar's origin (spec/bank.md "Clock")
    return bank


def read_genesis(ledger: str | Path) -> Genesis:
    return codec.decode((Path(ledger) / GENESIS_FILE).read_bytes(), Genesis)


@dataclass
class ProducedSlot:
    slot: int
    entries: int
    transactions: int
    data_shreds: int
    code_shreds: int
    bank_hash: bytes


def transfer_tx(src: Keypair, dst: bytes, lamports: int, blockhash: bytes) -> bytes:
    from solders.hash import Hash
    from solders.keypair import Keypair as SKeypair
    from solders.pubkey import Pubkey
    from solders.system_program import TransferParams, transfer
    from solders.transaction import Transaction

    skp = SKeypair.from_seed(src.seed)
    ix = transfer(TransferParams(from_pubkey=skp.pubkey(), to_pubkey=Pubkey(dst), lamports=lamports))
    return bytes(Transaction.new_signed_with_payer([ix], skp.pubkey(), [skp], Hash(blockhash)))


def produce(
    ledger: str | Path,
    slots: int,
    *,
    genesis: Genesis,
    leader: Keypair,
    users: Sequence[Keypair],
    txs_per_slot: int = 48,
    seed: int = 0,
    on_slot: Callable[[ProducedSlot], None] | None = None,
) -> list[ProducedSlot]:
    """Create a ledger at ``ledger`` (must not hold one) and produce slots 1..``slots``,
    all led and signed by ``leader`` (genesis's first bootstrap node), filled with transfers
    between the funded ``users`` (e.g. :func:`ambient_p2p.devnet.genesis.ledger_genesis` and
    :mod:`ambient_p2p.devnet.users`' ledger keys)."""
    ledger = Path(ledger)
    if (ledger / GENESIS_FILE).exists():
        raise FileExistsError(f"{ledger} already holds a ledger")
    if genesis.bootstrap_nodes[0].identity != leader.pubkey:
        raise ValueError("the leader is not genesis's first bootstrap node")
    ledger.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    hpt, tps = genesis.poh.hashes_per_tick, genesis.poh.ticks_per_slot
    out = []
    with Blockstore.open(ledger) as bs:
        bs.set_roots([0])
        (ledger / GENESIS_FILE).write_bytes(codec.encode(genesis))
        bank = genesis_bank(genesis)
        poh = Poh(genesis.hash(), hpt)
        chained_root = genesis.hash()
        for slot in range(1, slots + 1):
            bank = open_bank(genesis, bank, slot, leader.pubkey)
            entries: list[Entry] = []
            tx_ticks = sorted(rng.sample(range(tps), min(tps, max(1, -(-txs_per_slot // TXS_PER_ENTRY)))))
            remaining = txs_per_slot
            ntx = 0
            for t in range(tps):
                if t in tx_ticks and remaining > 0 and users:
                    batch = []
                    for _ in range(min(TXS_PER_ENTRY, remaining)):
                        a, b = rng.sample(range(len(users)), 2) if len(users) > 1 else (0, 0)
                        batch.append(transfer_tx(users[a], users[b].pubkey, rng.randint(1, 10_000),
                                                  bank.last_blockhash))
                    bank.process_transactions(batch)
                    poh.hash_some(hpt // 2)
                    entry = poh.record_entry(batch)
                    if entry is None:  # only the tick hash was left; cannot happen after hash_some(hpt//2)
                        raise AssertionError("PoH refused a record")
                    entries.append(entry)
                    remaining -= len(batch)
                    ntx += len(batch)
                entries.append(poh.tick_entry())
            bank_hash = bank.freeze(entries[-1].hash)
            cut = [len(entries) * k // BATCHES_PER_SLOT for k in range(BATCHES_PER_SLOT + 1)]
            shredder = SlotShredder(leader, slot, slot - 1, SHRED_VERSION, chained_root)
            packets: list[bytes] = []
            ndata = ncode = 0
            for k in range(BATCHES_PER_SLOT):
                part = entries[cut[k] : cut[k + 1]]
                ticks_so_far = sum(1 for e in entries[: cut[k + 1]] if e.is_tick)
                sb = shredder.add(serialize_entries(part), reference_tick=ticks_so_far,
                                  is_last_in_slot=k == BATCHES_PER_SLOT - 1)
                packets.extend(s.payload for s in sb.data)
                packets.extend(s.payload for s in sb.code)
                ndata += len(sb.data)
                ncode += len(sb.code)
            chained_root = shredder.merkle_root
            res = bs.insert_shreds(packets, lambda _s: leader.pubkey)
            if res.rejected or res.inserted != len(packets):
                raise AssertionError(f"own shreds rejected: {res.rejected[:3]}")
            bs.put_bank_hash(BankHashRecord(slot, slot - 1, bank_hash, entries[-1].hash,
                                            bank.signature_count, bank.transaction_count))
            ps = ProducedSlot(slot, len(entries), ntx, ndata, ncode, bank_hash)
            out.append(ps)
            if on_slot:
                on_slot(ps)
        bs.put_bank_snapshot(bank_to_snapshot(bank))
    return out
