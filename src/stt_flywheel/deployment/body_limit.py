"""A limit on the size of a request's body, for the HTTP services (serving, feedback)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BodyLimit"]


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413, judged by Content-Length before it is
    read, or as it streams in when the length is not given; the handler never sees it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        seen, refused = 0, False

        async def limited() -> dict[str, Any]:
            nonlocal seen, refused
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}  # the handler stops reading
            return message

        async def quiet(message: dict[str, Any]) -> None:
            if not refused:  # after the 413, whatever the handler answers goes nowhere
                await send(message)

        await self.app(scope, limited, quiet)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
