"""The Starlette application: route modules, error bodies and access control."""

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import BaseRoute, Route, Router, get_route_path
from starlette.types import Receive, Scope, Send

from ..server import Isengard
from . import (
    archives, find, instances, jobs, metadata, modalities, queries, resources, sending, system, tags, tools,
)
from . import commitment, create, images, modification, worklists
from .errors import HANDLERS
from .security import AccessControl
from .threads import on_thread, thread_pool

ROUTE_MODULES = (
    system, instances, resources, metadata, tags, find, tools, modalities, sending, queries, jobs, archives,
    worklists, commitment, images, create, modification,
)


class Compression(GZipMiddleware):
    """Starlette's gzip for the clients that accept it, out of the way of the others (most API
    clients): its pass-through responder inspected each response, for 2% of an ingest's time."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(
            name == b"accept-encoding" and b"gzip" in value for name, value in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class SegmentRouter(Router):
    """Starlette's router tries its routes in turn, and there are about 190: a route near the end,
    such as /tools/find, was found after 0.13 ms. Here each request goes to the routes whose path
    begins with the same segment (or with a parameter), in their order."""

    def __init__(self, routes: list[BaseRoute], **options: Any):
        super().__init__(routes, **options)
        segments = {_first_segment(route) for route in routes}
        self._by_segment = {
            segment: Router([route for route in routes if _first_segment(route) in (segment, None)])
            for segment in segments - {None}
        }
        self._others = Router([route for route in routes if _first_segment(route) is None])

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().app(scope, receive, send)
            return
        segment = get_route_path(scope).lstrip("/").split("/", 1)[0]
        await self._by_segment.get(segment, self._others).app(scope, receive, send)


def _first_segment(route: BaseRoute) -> str | None:
    """The literal first segment of the route's path; None if it may be anything."""
    segment = route.path.split("/", 2)[1] if isinstance(route, Route) else "{"
    return None if "{" in segment else segment


def create_app(isengard: Isengard) -> Starlette:
    config = isengard.config
    middleware = [
        Middleware(
            AccessControl,
            remote_access_allowed=config.remote_access_allowed,
            users=config.registered_users if config.authentication_enabled else None,
        )
    ]
    if config.http_compression_enabled:
        middleware.append(Middleware(Compression, minimum_size=1024))
    routes = [on_thread(route) for module in ROUTE_MODULES for route in module.routes()]
    app = Starlette(middleware=middleware, exception_handlers=HANDLERS)
    # Replaced before the first request, which builds the middleware stack around the router.
    app.router = SegmentRouter(routes, lifespan=thread_pool)  # type: ignore[arg-type]
    app.state.isengard = isengard
    return app
