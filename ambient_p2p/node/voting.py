"""The voting service (agave core/src/voting_service.rs): decide hands it (tower record,
vote transaction) pairs on one bounded channel; it writes the tower durably in a worker
thread (ledger/tower_storage.py) and only THEN lets the vote out (into this node's vote pool, then gossip), so a
crash can never leave a vote on the wire, or in our own block, that the restarted tower
does not know about, and the fsyncs never stall the event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..core.node_policy import CastVote
from ..core.vote_program import VoteTx
from ..ledger.tower_storage import write_tower

#: Votes waiting for their tower write and the network; a full queue drops the vote
#: (counted: ``votes_unsent``), never blocks replay.
VOTE_QUEUE_LEN = 256


#: what the service performs: the policy's ``CastVote`` (record None: the tower is unchanged,
#: a refreshed last vote; vote None: an identity without LStake keeps its tower, sends nothing)
VoteOp = CastVote


class VotingService:
    def __init__(self, path: Path, on_durable: Callable[[VoteTx], Awaitable[None]],
                 run: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync) -> None:
        """``run(fn, *args)``: how the tower write runs (the validator's ``_thread``: a
        worker thread, timed; inline without offload)."""
        self.path, self.on_durable, self.run_sync = path, on_durable, run
        self.send, self.recv = trio.open_memory_channel[VoteOp](VOTE_QUEUE_LEN)
        self.dropped = 0
        self.written = 0

    def submit(self, op: VoteOp) -> bool:
        try:
            self.send.send_nowait(op)
            return True
        except trio.WouldBlock:
            self.dropped += 1
            return False

    async def _one(self, op: VoteOp) -> None:
        if op.record is not None:
            await self.run_sync(write_tower, self.path, op.record)
            self.written += 1
        if op.vote is not None:
            await self.on_durable(op.vote)

    async def drain(self) -> None:
        """Handle every queued vote now (tests; shutdown)."""
        while True:
            try:
                op = self.recv.receive_nowait()
            except trio.WouldBlock:
                return
            await self._one(op)

    async def run(self) -> None:
        async for op in self.recv:
            await self._one(op)
