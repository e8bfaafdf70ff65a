"""The Starlette application: route modules, error bodies and access control."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from ..server import Isengard
from . import (
    archives, find, instances, jobs, metadata, modalities, queries, resources, sending, system, tags, tools,
)
from . import commitment, worklists
from .errors import HANDLERS
from .security import AccessControl

ROUTE_MODULES = (
    system, instances, resources, metadata, tags, find, tools, modalities, sending, queries, jobs, archives,
    worklists, commitment,
)


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
        middleware.append(Middleware(GZipMiddleware, minimum_size=1024))
    routes = [route for module in ROUTE_MODULES for route in module.routes()]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=HANDLERS)  # type: ignore[arg-type]
    app.state.isengard = isengard
    return app
