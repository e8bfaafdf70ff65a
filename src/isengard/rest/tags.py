"""Placeholder: routes being written in this session."""

from starlette.routing import Route


def routes() -> list[Route]:
    return []
