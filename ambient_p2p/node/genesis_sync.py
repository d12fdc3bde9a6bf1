"""Genesis from the network (spec/join.md, "Genesis"): every node that runs with a genesis
serves it on ``/ambient/genesis/1``; ``ambient-p2p join <bootstrap>`` without ``--genesis``
fetches it before the node starts (agave: the validator downloads ``genesis.tar.bz2`` from
its ``--entrypoint`` and checks ``--expected-genesis-hash``; here a request/response over
libp2p, the answer decoded strictly by core/join.py).

The fetch runs its own short-lived libp2p host with a throwaway identity, so a refused
genesis leaves nothing behind: the node's identity and data directory are written only
after the genesis passed every check.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..core.join import JoinRejected, genesis_from_answer
from ..core.messages import Genesis
from ..net.messages import GenesisRequest, GenesisResponse
from ..net.node import ExtensionBase
from ..net.reqresp import GENESIS, PROTO_GENESIS, ReqRespError, request

if TYPE_CHECKING:  # pragma: no cover
    from libp2p.peer.id import ID

    from ..net.node import NetNode

#: The stored genesis in a node's data directory (written once, by the first join).
GENESIS_FILE = "genesis.cbor"
#: Seconds one genesis request may take (1 MiB at worst over loopback or a WAN link).
GENESIS_REQUEST_TIMEOUT_S = 10.0


class GenesisFetchError(Exception):
    """No bootstrap peer handed over an acceptable genesis. ``unreachable`` when none
    could even be dialled (the caller words it like the node's own join error)."""

    def __init__(self, message: str, *, unreachable: bool = False, not_found: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.not_found = not_found


@dataclass(frozen=True)
class FetchedGenesis:
    raw: bytes
    genesis: Genesis
    peer: str  # the multiaddr that answered


class GenesisExtension(ExtensionBase):
    """Serves the node's genesis on ``/ambient/genesis/1`` (a ``NodeExtension``)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.served = 0

    def handler(self, _peer: ID, req: GenesisRequest) -> GenesisResponse:
        self.served += 1
        return GenesisResponse(nonce=req.nonce, genesis=self.raw)

    def reqresp_handlers(self) -> dict[str, Any]:
        return {PROTO_GENESIS: self.handler}

    def status(self) -> dict[str, Any]:
        return {"genesis_served": self.served}


async def fetch_genesis(bootstrap: Sequence[str], expected_hash: bytes | None, timeout_s: float,
                        rng: random.Random | None = None) -> FetchedGenesis:
    """Dial the bootstrap peers in order (until ``timeout_s`` passes) and ask each that
    answers for its genesis; return the first acceptable one. A peer whose genesis fails the
    checks (``genesis-mismatch`` included) is reported, not retried: a mismatch is the
    person's decision, so the first one ends the fetch."""
    from ..core.crypto import Keypair
    from ..net.host import HostConfig, open_host, parse_peer_multiaddr

    rng = rng or random.Random()
    kp = Keypair.generate()  # throwaway: nothing of the node is written before the checks
    reached, not_found = False, []
    deadline = trio.current_time() + timeout_s
    async with open_host(kp, HostConfig(listen=("/ip4/127.0.0.1/tcp/0",), target_peers=4)) as host:
        while trio.current_time() < deadline:
            for addr in bootstrap:
                info = parse_peer_multiaddr(addr)
                with trio.move_on_after(max(0.1, min(5.0, deadline - trio.current_time()))):
                    try:
                        await host.connect(info)
                    except Exception:  # noqa: BLE001 - any dial failure: try the next one
                        continue
                if info.peer_id not in host.get_network().connections:
                    continue
                reached = True
                try:
                    resp = await request(host, info.peer_id, GENESIS, GenesisRequest(nonce=rng.getrandbits(32)),
                                         timeout=GENESIS_REQUEST_TIMEOUT_S)
                except ReqRespError as exc:
                    not_found.append(f"{addr}: {exc.code}")
                    continue
                try:
                    g = genesis_from_answer(resp.genesis, expected_hash)
                except JoinRejected as exc:
                    if exc.reason == "not-found":
                        not_found.append(f"{addr}: no genesis")
                        continue
                    raise GenesisFetchError(f"the genesis of {addr} was refused: {exc}") from None
                assert resp.genesis is not None
                return FetchedGenesis(resp.genesis, g, addr)
            if reached:
                break
            await trio.sleep(min(1.0, max(0.0, deadline - trio.current_time())))
    if not reached:
        raise GenesisFetchError(f"could not reach bootstrap peer {bootstrap[0]} within {timeout_s:g}s",
                                unreachable=True)
    raise GenesisFetchError(f"no bootstrap peer handed over a genesis ({'; '.join(not_found)})", not_found=True)


def fetch_genesis_blocking(bootstrap: Sequence[str], expected_hash: bytes | None,
                           timeout_s: float) -> FetchedGenesis:
    """:func:`fetch_genesis` in its own trio run (before the node's own run starts)."""
    import logging

    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    out: list[FetchedGenesis] = []

    async def main() -> None:
        out.append(await fetch_genesis(bootstrap, expected_hash, timeout_s))

    try:
        trio.run(main)
    except BaseExceptionGroup as eg:
        err = _find(eg)
        if err is not None:
            raise err from None
        raise
    return out[0]


def _find(eg: BaseExceptionGroup) -> GenesisFetchError | None:
    for e in eg.exceptions:
        if isinstance(e, GenesisFetchError):
            return e
        if isinstance(e, BaseExceptionGroup):
            f = _find(e)
            if f is not None:
                return f
    return None


def stored_genesis_path(data_dir: Path) -> Path:
    return data_dir / GENESIS_FILE


class JoinStatus(ExtensionBase):
    """The join's progress after the node started (a ``NodeExtension``): ``status()["join"]``
    holds the genesis, the snapshot the node started from, and the phase, ``repair`` (with
    the slots left) until the validator is within
    ``CAUGHT_UP_MAX_LAG_SLOTS`` of the cluster's tip (the highest slot it holds shreds of
    or a peer voted for),
    then ``caught-up`` (with the lag). Until the first catch-up a line is printed when the
    phase changes and every ``interval_s`` while repairing (spec/join.md "Progress")."""

    def __init__(self, genesis_hash: bytes | None, chain_id: str, validator: Any, snapshot: dict[str, Any] | None,
                 interval_s: float, say: Any) -> None:
        self.genesis_hash = genesis_hash
        self.chain_id = chain_id
        self.validator = validator
        self.snapshot = snapshot
        self.interval_s = interval_s
        self.say = say
        self.phase = "connecting"
        self.caught_up_at_slot: int | None = None

    def progress(self) -> Any:
        from ..core.join import CAUGHT_UP_MAX_LAG_SLOTS, JoinProgress

        v = self.validator
        if v is None:  # a gossip-only node: nothing to catch up
            return JoinProgress("gossip", genesis_hash=self.genesis_hash, chain_id=self.chain_id)
        if not getattr(v, "loaded", False):
            return JoinProgress(self.phase, genesis_hash=self.genesis_hash, chain_id=self.chain_id)
        # the cluster's tip as this node sees it: the highest slot it holds shreds of (what
        # turbine and repair delivered) or a peer voted for (right after a snapshot install
        # the node stores nothing newer: the shreds of the tip's epoch are not verifiable
        # yet, and it printed "caught-up slot 65 lag 0" 200 slots behind), not the wall
        # clock, which a loaded cluster lags too
        local = v.cons.processed_slot()
        cluster = max(local, v.bs.highest_slot() or 0, max(v.dups.pending, default=0))
        lag = max(0, cluster - local)
        phase = "caught-up" if lag <= CAUGHT_UP_MAX_LAG_SLOTS else "repair"
        return JoinProgress(phase, genesis_hash=self.genesis_hash, chain_id=self.chain_id, local_slot=local,
                            cluster_slot=cluster)

    def status(self) -> dict[str, Any]:
        p = self.progress()
        return {"join": {"phase": p.phase, "genesis_hash": self.genesis_hash.hex() if self.genesis_hash else None,
                         "chain_id": self.chain_id, "snapshot": self.snapshot, "slot": p.local_slot,
                         "cluster_slot": p.cluster_slot, "lag_slots": p.lag_slots,
                         "caught_up_at_slot": self.caught_up_at_slot}}

    async def run(self, node: NetNode) -> None:
        from ..core.join import join_phase_line

        last_line = 0.0
        while True:
            p = self.progress()
            now = trio.current_time()
            # lines until the first catch-up; after it the status line says the rest
            if self.caught_up_at_slot is None and (
                    p.phase != self.phase or (p.phase == "repair" and now - last_line >= self.interval_s)):
                if p.phase == "caught-up":
                    self.caught_up_at_slot = p.local_slot
                if p.phase in ("repair", "caught-up"):
                    self.say(join_phase_line(p))
                    last_line = now
            self.phase = p.phase
            await trio.sleep(0.5)
