"""The validator's narrow view of the network: publish on a topic, ask one peer, list
peers. ``NetNode`` is adapted to it here; tests can supply any object of this shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..net.reqresp import request

if TYPE_CHECKING:  # pragma: no cover
    from ..net.node import NetNode


class NetPort(Protocol):
    async def publish(self, topic: str, data: bytes) -> None: ...

    async def request(self, peer: Any, proto: str, req: Any, timeout_s: float) -> Any:
        """The response, or raises ``ReqRespError``."""
        ...

    def peers(self) -> list[Any]: ...

    def peer_label(self, peer: Any) -> str: ...


class NetNodePort:
    def __init__(self, node: NetNode) -> None:
        self.node = node

    async def publish(self, topic: str, data: bytes) -> None:
        if self.node.gossip is not None:
            await self.node.gossip.publish(topic, data)

    async def request(self, peer: Any, proto: str, req: Any, timeout_s: float) -> Any:
        assert self.node.host is not None
        return await request(self.node.host, peer, proto, req, timeout=timeout_s)

    def peers(self) -> list[Any]:
        host = self.node.host
        return [] if host is None else sorted(host.get_network().connections.keys(), key=str)

    def peer_label(self, peer: Any) -> str:
        from ..core.crypto import encode_address
        from ..net.host import pubkey_of_peer_id

        pk = pubkey_of_peer_id(peer)
        return encode_address(pk) if pk else str(peer)
