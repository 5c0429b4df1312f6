"""MCP over streamable HTTP: optional, loopback only, every request with a bearer token."""

import asyncio
import contextlib
import hmac
import socket
from collections.abc import Iterator
from typing import Any


class BearerGate:
    """ASGI wrapper: every HTTP request needs `Authorization: Bearer <token>`, else 401."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = next((v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), b"")
            if not hmac.compare_digest(got, self.expected):
                body = b'{"error": "unauthorized: send Authorization: Bearer <token from the mcp-token file>"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b'Bearer realm="para"'),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class HttpServer:
    """uvicorn serving the MCP streamable HTTP app inside the sidecar's loop."""

    def __init__(self, frontend: Any, host: str, port: int, token: str) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the sidecar owns SIGTERM/SIGINT
                yield

        self.sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        bound = self.sock.getsockname()
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{bound[1]}/mcp"
        config = uvicorn.Config(frontend.http_app(token, host), lifespan="on", log_level="warning",
                                access_log=False)
        self.server = Quiet(config)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)
        self.sock.close()
