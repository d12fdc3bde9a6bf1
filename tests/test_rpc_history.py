"""The RPC's stored transaction history (ledger/txstatus.py, spec/rpc.md "History"): blocks
written to a real RocksDB blockstore read back equal after a reopen, records are decoded
strictly (a record whose key disagrees with its contents, a header whose count disagrees
with the stored transactions, bytes that do not decode: each refused with a reason), ledger
cleanup's purge drops a slot's history, and the RPC index loads what was stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambient_p2p.core import codec
from ambient_p2p.core.bank import TxRecord, TxResult
from ambient_p2p.ledger.blockstore import Blockstore, slot_key
from ambient_p2p.ledger.txstatus import (
    BLOCK_STATUS_CF,
    MAX_TX_ERROR_BYTES,
    TX_STATUS_CF,
    BlockStatus,
    StoredBlock,
    TxStatus,
    TxStatusError,
    block_slots,
    put_blocks,
    read_block,
)
from ambient_p2p.node.rpc.txindex import BlockRecord, TxIndex, from_stored, to_stored


def _transfer(seed: str, to: bytes, lamports: int, blockhash: bytes) -> bytes:
    from solders.hash import Hash
    from solders.keypair import Keypair
    from solders.message import Message
    from solders.pubkey import Pubkey
    from solders.system_program import TransferParams, transfer
    from solders.transaction import Transaction

    kp = Keypair.from_seed(bytes(seed.encode().ljust(32, b"\0"))[:32])
    ix = transfer(TransferParams(from_pubkey=kp.pubkey(), to_pubkey=Pubkey(to), lamports=lamports))
    return bytes(Transaction([kp], Message([ix], kp.pubkey()), Hash(blockhash)).__bytes__())


def _block(slot: int, n: int, error: str | None = None) -> BlockRecord:
    txs = []
    for i in range(n):
        raw = _transfer(f"payer-{slot}-{i}", bytes([i + 1]) * 32, 1000 + i, bytes([slot % 256]) * 32)
        txs.append(TxRecord(raw, TxResult(raw[1:65], 5000, error), (10_000_000, 0, 1), (10_000_000 - 6000 - i, 1000 + i, 1)))
    return BlockRecord(slot, max(0, slot - 1), bytes([slot % 256, 1]) * 16, bytes([slot % 256, 2]) * 16, slot, 1_700_000_000 + slot,
                       tuple(txs))


@pytest.fixture
def bs(tmp_path: Path) -> Blockstore:
    b = Blockstore.open(tmp_path / "bs")
    yield b  # type: ignore[misc]
    b.close()


def test_blocks_read_back_equal_after_reopen_and_index_loads_them(tmp_path: Path) -> None:
    recs = [_block(3, 2), _block(4, 0), _block(7, 3, "InstructionError: insufficient funds")]
    with Blockstore.open(tmp_path / "bs") as bs:
        assert put_blocks(bs, [to_stored(r) for r in recs]) == 3
    with Blockstore.open(tmp_path / "bs") as bs:  # a restart: a fresh open verifies every family
        assert block_slots(bs) == [3, 4, 7]
        back = [from_stored(b) for s in block_slots(bs) if (b := read_block(bs, s)) is not None]
        assert back == recs
        assert read_block(bs, 5) is None
    idx = TxIndex()
    assert all(idx.load(r) for r in back) and not idx.load(back[0])  # a second load of a slot is refused
    sig = recs[2].txs[1].result.signature
    [loc] = idx.locations(sig)
    assert (loc.block.slot, loc.position, loc.record.result.error) == (7, 1, "InstructionError: insufficient funds")
    assert idx.heights[7] == 7
    to = bytes([2]) * 32  # the recipient of each block's second transfer
    assert [(x.block.slot, x.position) for x in idx.address_locations(to)] == [(7, 1), (3, 1)]


def test_purge_drops_history_with_the_slot(bs: Blockstore) -> None:
    put_blocks(bs, [to_stored(_block(s, 2)) for s in (10, 11, 12)])
    bs.purge_slots(10, 11)
    assert block_slots(bs) == [12]
    assert [k for k, _v in bs.cf_slots(TX_STATUS_CF, 0)] == [slot_key(12) + b"\0\0\0\0", slot_key(12) + b"\0\0\0\1"]


def test_strict_reads_refuse_inconsistent_records(bs: Blockstore) -> None:
    good = to_stored(_block(20, 2))
    put_blocks(bs, [good])
    # a header stored under another slot's key
    bs.cf_write({(BLOCK_STATUS_CF, slot_key(21)): codec.encode(good.header)})
    with pytest.raises(TxStatusError, match="keyed"):
        read_block(bs, 21)
    # a missing transaction: the header's count no longer matches
    bs.cf_write({}, [(TX_STATUS_CF, slot_key(20) + b"\0\0\0\1")])
    with pytest.raises(TxStatusError, match="counts 2 transactions, 1 stored"):
        read_block(bs, 20)
    # bytes that do not decode
    bs.cf_write({(BLOCK_STATUS_CF, slot_key(22)): b"\x83\x19\x01\x09\x01\xa0"})
    with pytest.raises(TxStatusError, match="block_status record"):
        read_block(bs, 22)
    # a transaction record under the wrong position
    t = good.txs[0]
    bs.cf_write({(BLOCK_STATUS_CF, slot_key(23)): codec.encode(BlockStatus(23, 22, bytes(32), bytes(32), 1, 1, 1)),
               (TX_STATUS_CF, slot_key(23) + b"\0\0\0\0"): codec.encode(t)})
    with pytest.raises(TxStatusError, match="holds 20/0"):
        read_block(bs, 23)


def test_a_stored_transaction_that_does_not_parse_is_refused_at_load(bs: Blockstore) -> None:
    """Bytes that decode as a TxStatus but are no transaction: the index's key parse (run
    by the RPC's load in its worker thread) raises BlockError, which the load counts as a
    bad record instead of serving the block."""
    from ambient_p2p.core.bank import BlockError
    from ambient_p2p.node.rpc.txindex import account_keys

    put_blocks(bs, [StoredBlock(BlockStatus(60, 59, bytes(32), bytes(32), 1, 1, 1),
                                (TxStatus(60, 0, b"\x01garbage", bytes(64), 5000),))])
    b = read_block(bs, 60)
    assert b is not None
    with pytest.raises(BlockError):
        account_keys(from_stored(b))


def test_writer_refuses_blocks_that_disagree_with_themselves(bs: Blockstore) -> None:
    good = to_stored(_block(30, 1))
    with pytest.raises(ValueError, match="counts 2"):
        put_blocks(bs, [StoredBlock(BlockStatus(30, 29, bytes(32), bytes(32), 1, 1, 2), good.txs)])
    with pytest.raises(ValueError, match="keyed 30/0"):
        put_blocks(bs, [StoredBlock(BlockStatus(31, 30, bytes(32), bytes(32), 1, 1, 1), good.txs)])
    assert block_slots(bs) == []  # nothing written


def test_long_errors_are_cut_not_refused(bs: Blockstore) -> None:
    rec = _block(40, 1, "é" * MAX_TX_ERROR_BYTES)
    put_blocks(bs, [to_stored(rec)])
    b = read_block(bs, 40)
    assert b is not None and b.txs[0].error is not None
    assert len(b.txs[0].error.encode()) <= MAX_TX_ERROR_BYTES and b.txs[0].error == "é" * (MAX_TX_ERROR_BYTES // 2)


@settings(max_examples=60, deadline=None)
@given(slot=st.integers(0, 2**64 - 1), pos=st.integers(0, 2**32 - 1), fee=st.integers(0, 2**64 - 1),
       raw=st.binary(min_size=0, max_size=1232), err=st.none() | st.text(max_size=200),
       bal=st.lists(st.integers(0, 2**64 - 1), max_size=256))
def test_tx_status_codec_round_trips_and_rejects_truncation(slot: int, pos: int, fee: int, raw: bytes,
                                                             err: str | None, bal: list[int]) -> None:
    t = TxStatus(slot, pos, raw, bytes(64), fee, None if err is None else err.encode("utf-8", "ignore").decode(),
                 tuple(bal), tuple(reversed(bal)))
    enc = codec.encode(t)
    assert codec.decode(enc, TxStatus) == t
    with pytest.raises(codec.DecodeError):
        codec.decode(enc[:-1], TxStatus)
    with pytest.raises(codec.DecodeError):
        codec.decode(enc + b"\0", TxStatus)


def test_inspect_decodes_the_records(bs: Blockstore, tmp_path: Path) -> None:
    from ambient_p2p.commands.inspect import inspect_bytes

    b = to_stored(_block(50, 1))
    h = inspect_bytes(codec.encode(b.header))
    t = inspect_bytes(codec.encode(b.txs[0]))
    assert "BlockStatus" in str(h) and "50" in str(h)
    assert "TxStatus" in str(t)


@pytest.mark.integration
def test_history_survives_a_restart_through_solana_py(tmp_path: Path) -> None:
    """A single-node localnet: an airdrop and three transfers, finalized; the node is
    stopped and started again on the same ledger; then the real solana-py client finds
    every old signature (getTransaction, getSignatureStatuses with searchTransactionHistory,
    getSignaturesForAddress with before/until/limit, getBlock) from the blockstore."""
    import asyncio
    import time

    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed, Finalized
    from solders.keypair import Keypair
    from solders.message import MessageV0
    from solders.signature import Signature
    from solders.system_program import TransferParams, transfer
    from solders.transaction import VersionedTransaction

    from ambient_p2p.devnet.localnet import Localnet
    from tests.test_rpc_multiproc import free_port_pair, rpc, wait_rpc_slot

    wait_s = 120.0
    port = free_port_pair()
    url = f"http://127.0.0.1:{port}"
    a, b = Keypair(), Keypair()

    def wait_rpc(n: Localnet, min_slot: int = 1) -> None:
        wait_rpc_slot(url, n, min_slot, wait_s)

    async def send_all() -> tuple[list[Signature], list[int]]:
        async with AsyncClient(url, commitment=Confirmed) as c:
            air = (await c.request_airdrop(a.pubkey(), 1_000_000_000)).value
            await c.confirm_transaction(air, Confirmed)
            sigs = []
            for i in range(3):
                latest = (await c.get_latest_blockhash()).value
                msg = MessageV0.try_compile(a.pubkey(), [transfer(TransferParams(
                    from_pubkey=a.pubkey(), to_pubkey=b.pubkey(), lamports=1_000_000 + i))], [], latest.blockhash)
                s = (await c.send_transaction(VersionedTransaction(msg, [a]))).value
                await c.confirm_transaction(s, Confirmed, last_valid_block_height=latest.last_valid_block_height)
                sigs.append(s)
            st = (await c.get_signature_statuses(sigs)).value
            slots = [x.slot for x in st if x is not None]
            assert len(slots) == 3
            deadline = time.monotonic() + wait_s
            while (await c.get_slot(Finalized)).value < max(slots):
                assert time.monotonic() < deadline, "the transfers never finalized"
                await asyncio.sleep(0.5)
            return sigs, slots

    async def query_after(sigs: list[Signature], slots: list[int]) -> None:
        async with AsyncClient(url, commitment=Finalized) as c:
            for s, slot in zip(sigs, slots, strict=True):
                got = (await c.get_transaction(s, max_supported_transaction_version=0)).value
                assert got is not None and got.slot == slot
                meta = got.transaction.meta
                assert meta is not None and meta.err is None and meta.fee == 5000
            st = (await c.get_signature_statuses(sigs, search_transaction_history=True)).value
            assert [x.slot if x else None for x in st] == slots
            assert all(x is not None and str(x.confirmation_status) .endswith("Finalized") for x in st), st
            # newest first; before/until/limit walk the list as agave's does
            listed = [x.signature for x in (await c.get_signatures_for_address(b.pubkey())).value]
            assert listed == list(reversed(sigs))
            page = (await c.get_signatures_for_address(b.pubkey(), before=sigs[2], limit=1)).value
            assert [x.signature for x in page] == [sigs[1]]
            page = (await c.get_signatures_for_address(b.pubkey(), until=sigs[0])).value
            assert [x.signature for x in page] == [sigs[2], sigs[1]]
            blk = (await c.get_block(slots[0], max_supported_transaction_version=0)).value
            assert any(t.transaction.signatures[0] == sigs[0] for t in blk.transactions)  # type: ignore[union-attr]
            assert (await c.get_balance(b.pubkey())).value == 3_000_003  # new accounts get >= 890,880 (rent)

    # snapshots every 16 slots (default 64): the restart point comes ~40 s sooner
    with Localnet(tmp_path / "net", 1, validator=True, rpc_base_port=port,
                  node_args={0: ["--snapshot-interval-slots", "16"]}) as n:
        wait_rpc(n, 3)
        sigs, slots = asyncio.run(send_all())
        # wait for a node snapshot above the transfers: the restarted node restores from it and
        # does not replay their slots, so only the stored history can answer for them
        deadline = time.monotonic() + 3 * wait_s
        while (rpc(url, "ambient_getNodeStatus")["result"]["consensus"]["ledger"].get("snapshot_slot") or 0) <= max(slots):
            assert time.monotonic() < deadline, "no node snapshot above the transfers"
            time.sleep(1.0)
        before = rpc(url, "ambient_getNodeStatus")["result"]
        assert before["rpc"]["history"]["written"] >= max(slots)
        n.restart(0)
        wait_rpc(n, max(slots))
        st = rpc(url, "ambient_getNodeStatus")["result"]
        assert st["consensus"]["ledger"]["restored_from"] > max(slots), st["consensus"]["ledger"]  # restored from a snapshot above them
        hist = st["rpc"]["history"]
        assert hist["loaded"] >= len(set(slots)) and hist["bad_records"] == 0, hist
        asyncio.run(query_after(sigs, slots))
        # the restart replayed the stored slots above the snapshot: /metrics times them
        from tests.test_rpc_multiproc import _scrape

        m = _scrape(url)
        n_replay, s_replay = m['ambient_op_seconds_count{op="replay"}'], m['ambient_op_seconds_sum{op="replay"}']
        assert n_replay >= 1 and s_replay > 0, m
        print(f"replays timed after the restart: {n_replay:.0f}, mean {s_replay / n_replay:.3f} s")
        print(f"restored from {st['consensus']['ledger']}, history {hist}, transfers in slots {slots}")


def test_history_uses_only_the_blockstores_public_column_family_api() -> None:
    """Review finding D6: ledger/txstatus.py reads and writes its column families through
    Blockstore.cf_get/cf_write/cf_prefix/cf_slots, never the blockstore's private helpers."""
    import re

    from ambient_p2p.ledger import txstatus

    src = Path(txstatus.__file__).read_text()
    assert re.findall(r"\bbs\._\w+", src) == []
    assert {"bs.cf_write", "bs.cf_get", "bs.cf_prefix", "bs.cf_slots"} <= set(re.findall(r"\bbs\.cf_\w+", src))
