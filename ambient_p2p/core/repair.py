"""Repair requests and answers as data (normative text: spec/node.md "Repair and catch-up").
Sans-IO: the policy's repair plan (``NodePolicy.repair_plan``: the slots to ask for, the
lowest orphan) and the blockstore facts the shell read go in; the requests of one round,
each addressed to a peer by index, come out; the shell turns them into wire messages
(``net/messages.py``) and sends them. The serving side's selections are here too.

A round (:func:`repair_round`), rules in order:

| rule | result |
|------|--------|
| no peer, or the plan wants nothing | no request (the round is skipped) |
| the plan names an orphan | first, ``AskOrphan(orphan)``: its ancestors' highest shreds in one request |
| every wanted slot, in the plan's order | ``AskSlot(slot, first_index)``, ``first_index`` = the slot's consumed data shreds (0 when nothing is stored) |
| more than ``REPAIR_MAX_REQUESTS_PER_ROUND`` | the first ones only |
| peers | request ``i`` goes to peer ``(i + r) mod n``, ``r`` drawn per request (spread, not all to one) |

Each request carries a fresh 32-bit nonce from the injected ``random.Random``, drawn in
request order (orphan first), then the peer offsets in request order.

Serving (:func:`slot_answer`, :func:`highest_index`): a ``/ambient/repair-slot/1`` answer is
the slot's stored data shreds from ``first_index`` on, index order, at most ``max_shreds``;
a highest-shred answer is the highest received index if it is at least ``min_index``
(nothing when nothing is received).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Requests per repair round (the orphan request included).
REPAIR_MAX_REQUESTS_PER_ROUND = 64


@dataclass(frozen=True)
class AskOrphan:
    """The highest shreds of ``slot``'s ancestors (``REPAIR_ORPHAN``)."""

    slot: int
    nonce: int


@dataclass(frozen=True)
class AskSlot:
    """``slot``'s data shreds from ``first_index`` on (``/ambient/repair-slot/1``)."""

    slot: int
    first_index: int
    nonce: int


Ask = AskOrphan | AskSlot


def repair_round(wanted: Sequence[int], orphan: int | None, consumed: Mapping[int, int | None], n_peers: int,
                 rng: random.Random) -> list[tuple[int, Ask]]:
    """The round's requests as (peer index, request): the table above. ``consumed``: per
    wanted slot, the data shreds stored contiguously from 0 (None: no meta)."""
    if n_peers <= 0 or not wanted:
        return []
    asks: list[Ask] = []
    if orphan is not None:
        asks.append(AskOrphan(orphan, rng.getrandbits(32)))
    asks += [AskSlot(s, consumed.get(s) or 0, rng.getrandbits(32)) for s in wanted]
    return [((i + rng.randrange(n_peers)) % n_peers, a) for i, a in enumerate(asks[:REPAIR_MAX_REQUESTS_PER_ROUND])]


def slot_answer(stored: Iterable[tuple[int, bytes]], first_index: int, max_shreds: int) -> list[bytes]:
    """The answer to ``AskSlot``: stored (index, payload) pairs, index order, from
    ``first_index`` on, at most ``max_shreds``."""
    return [p for i, p in sorted(stored, key=lambda ip: ip[0]) if i >= first_index][:max_shreds]


def highest_index(received: int, min_index: int) -> int | None:
    """The index a highest-shred request is answered with: the highest received (``received``
    counts indices 0..received-1), if at least ``min_index``; None otherwise."""
    if received == 0 or received - 1 < min_index:
        return None
    return received - 1
