"""The event bus: what happened in the index, for scripting, routing and stable resources.

Events are published after the index transaction that caused them has committed,
so a subscriber always finds the resource in the index (or gone, for Deleted).
A failing subscriber is logged and never affects the publisher.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .dicom.levels import Level
from .index.enums import ChangeType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    change_type: ChangeType
    level: Level
    public_id: str
    # Source-specific details, e.g. the parsed instance and its origin for NewInstance.
    details: dict[str, Any] = field(default_factory=dict, compare=False)


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.remove(subscriber)

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("Event subscriber %r failed on %s %s", subscriber, event.change_type.value, event.public_id)
