"""Several services on one networking node: net/node.py takes one ``NodeExtension``;
:func:`compose` stacks many (the validator, the blob service, a miner) into one.

Rules: gossip payload checks and request/response handlers are merged and a topic or
protocol claimed twice is an error (two answers to one request would be ambiguous); the
first shred store given wins; a delivery goes to each part in order until one consumes it;
a control command goes to each part in order until one answers; status dicts are merged in
order; every part's ``run`` is a task of one nursery (one failing cancels the node).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:  # pragma: no cover
    from ..net.gossip import Delivery, PayloadCheck
    from ..net.node import NetNode, NodeExtension
    from ..net.reqresp import ShredStore


class ComposedExtension:
    """The parts of a node, in order (see the module docstring)."""

    def __init__(self, *parts: NodeExtension) -> None:
        self.parts = parts

    def payload_checks(self) -> dict[str, PayloadCheck]:
        out: dict[str, PayloadCheck] = {}
        for p in self.parts:
            for k, v in p.payload_checks().items():
                if k in out:
                    raise ValueError(f"two payload checks for topic kind {k!r}")
                out[k] = v
        return out

    def shred_store(self) -> ShredStore | None:
        for p in self.parts:
            s = p.shred_store()
            if s is not None:
                return s
        return None

    def reqresp_handlers(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.parts:
            for k, v in p.reqresp_handlers().items():
                if k in out:
                    raise ValueError(f"two handlers for protocol {k}")
                out[k] = v
        return out

    def on_delivery(self, d: Delivery) -> bool:
        return any(p.on_delivery(d) for p in self.parts)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.parts:
            out.update(p.status())
        return out

    def status_line(self) -> str:
        return " ".join(s for p in self.parts if (s := p.status_line()))

    async def control(self, req: dict[str, Any]) -> dict[str, Any] | None:
        for p in self.parts:
            out = await p.control(req)
            if out is not None:
                return out
        return None

    async def run(self, node: NetNode) -> None:
        async with trio.open_nursery() as nursery:
            for p in self.parts:
                nursery.start_soon(p.run, node)


def compose(*parts: NodeExtension | None) -> NodeExtension | None:
    """One extension of the given ones (None entries skipped); the part itself if only one."""
    given = [p for p in parts if p is not None]
    if not given:
        return None
    if len(given) == 1:
        return given[0]
    return ComposedExtension(*given)
