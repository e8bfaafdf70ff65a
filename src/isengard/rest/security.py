"""HTTP access control: loopback-only unless RemoteAccessAllowed, and Basic authentication."""

import base64
import functools
import hmac
import ipaddress

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

REALM = "Isengard"


class AccessControl:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request)."""

    def __init__(self, app: ASGIApp, remote_access_allowed: bool, users: dict[str, str] | None):
        self.app = app
        self.remote_access_allowed = remote_access_allowed
        self.users = users  # None: authentication disabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.remote_access_allowed and not _is_loopback(scope):
            await _deny(send, 403, "Remote access is not allowed (RemoteAccessAllowed is false)")
            return
        if self.users is not None:
            username = self._authenticated_user(scope)
            if username is None:
                await _deny(send, 401, "Authentication is required", [(b"www-authenticate", f'Basic realm="{REALM}"'.encode())])
                return
            scope.setdefault("state", {})["username"] = username
        await self.app(scope, receive, send)

    def _authenticated_user(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:6].lower() == b"basic ":
                try:
                    username, _, password = base64.b64decode(value[6:]).decode("utf-8").partition(":")
                except (ValueError, UnicodeDecodeError):
                    return None
                expected = self.users.get(username) if self.users else None
                if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
                    return username
        return None


def _is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return True  # in-process calls (tests, scripting) have no peer address
    return _loopback_address(client[0])


@functools.lru_cache(maxsize=1024)
def _loopback_address(host: str) -> bool:
    """Parsing the address costs more than the rest of the check: the few clients are remembered."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _deny(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"HttpStatus": status, "Message": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})
