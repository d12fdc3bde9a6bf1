"""The ASGI app (starlette): routes of spec/rpc.md "Routes"."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from .metrics import CONTENT_TYPE, make_registry, render
from .solana import INTERNAL_ERROR

if TYPE_CHECKING:  # pragma: no cover
    from .server import RpcExtension


def build_app(ext: RpcExtension) -> Starlette:
    from . import openai_api, pubsub
    from .server import REQUEST_TIMEOUT_S

    def extra() -> dict[str, Any]:
        s = ext.status()["rpc"]
        return {**s, "chat": ext.chat.counts if ext.chat is not None else {}, "peer_scores": ext.peer_scores(),
                "timings": ext.v.timings.snapshot()}

    registry = make_registry(lambda: ext.node.status() if ext.node is not None else {}, extra)

    async def jsonrpc(request: Request) -> Response:
        body = await request.body()
        out: Any = None
        with trio.move_on_after(REQUEST_TIMEOUT_S) as scope:
            out = await ext.rpc.handle_body(body)
        if scope.cancelled_caught:
            out = {"jsonrpc": "2.0", "error": {"code": INTERNAL_ERROR, "message": "request timed out"}, "id": None}
        if out is None:
            return Response(status_code=204)
        return Response(json.dumps(out), media_type="application/json")

    async def health(_request: Request) -> Response:
        # agave's GET /health: "ok", "behind" or "unknown", as text
        if not ext.v.loaded:
            return PlainTextResponse("unknown")
        return PlainTextResponse("behind" if ext.v.behind() else "ok")

    async def metrics(_request: Request) -> Response:
        return Response(render(registry), media_type=CONTENT_TYPE)

    async def not_found(_request: Request) -> Response:
        return JSONResponse({"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"},
                             "id": None}, status_code=404)

    ext.chat = openai_api.ChatDoor(ext)
    routes = [
        Route("/", jsonrpc, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/models", ext.chat.models, methods=["GET"]),
        Route("/v1/models/{model:path}", ext.chat.model, methods=["GET"]),
        Route("/v1/chat/completions", ext.chat.completions, methods=["POST"]),
        WebSocketRoute("/", pubsub.endpoint(ext)),
    ]
    async def on_404(request: Request, _exc: Exception) -> Response:
        return await not_found(request)

    app = Starlette(routes=routes)
    app.add_exception_handler(404, on_404)
    return app
