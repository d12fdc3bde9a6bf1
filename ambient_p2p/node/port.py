"""The validator's narrow view of the network: publish on a topic, ask one peer, list
peers. ``NetNode`` is adapted to it by ``net/port.py`` ``NetNodePort`` (re-exported here);
tests can supply any object of this shape."""

from __future__ import annotations

from typing import Any, Protocol

from ..net.port import NetNodePort

__all__ = ["NetNodePort", "NetPort"]


class NetPort(Protocol):
    async def publish(self, topic: str, data: bytes) -> None: ...

    async def request(self, peer: Any, proto: str, req: Any, timeout_s: float) -> Any:
        """The response, or raises ``ReqRespError``."""
        ...

    def peers(self) -> list[Any]: ...

    def peer_label(self, peer: Any) -> str: ...
