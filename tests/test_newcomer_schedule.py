"""A whole epoch without a block must not leave later epochs without leaders (found by the
newcomer test, tests/test_newcomer_multiproc.py: four nodes loading the model on a loaded
machine produced nothing for more than an epoch of 32, then 128 slots, and the chain never
produced again, every node showing ``leader=-``). The leader of a slot asked on the working
fork is the leader a block extending that fork would have (node/schedule.py ``leader``)."""

from __future__ import annotations

from ambient_p2p.core.crypto import Keypair
from ambient_p2p.devnet.genesis import localnet_genesis
from ambient_p2p.node.schedule import ForkSlot, ScheduleBook

KEYS = [Keypair.deterministic("newcomer-schedule", i) for i in range(4)]
GENESIS = localnet_genesis("newcomer-schedule", [k.pubkey for k in KEYS], slots_per_epoch=32, creation_time_s=1)
SPE = 32


def _book(tip: int) -> ScheduleBook:
    book = ScheduleBook(GENESIS)
    book.credited_through = 20  # rooted through slot 20 (epoch 0)
    fork = [ForkSlot(s, bytes([s]) * 32, (), ()) for s in range(21, tip + 1)]
    book.working_fork = lambda: fork
    return book


def test_slots_past_a_whole_epoch_without_blocks_still_have_leaders() -> None:
    book = _book(tip=63)  # the last block is the last slot of epoch 1; epochs 2 and 3 had none
    for slot in (4 * SPE, 4 * SPE + 7, 5 * SPE + 1):  # epochs 4 and 5: bases end at slots 63 and 95
        assert book.leader(slot) is not None, slot
    # the leader is the one a block extending the working fork gets on replay
    fork = book.working_fork()  # type: ignore[misc]
    assert all(book.leader(s) == book.leader(s, fork) for s in range(4 * SPE, 6 * SPE))

