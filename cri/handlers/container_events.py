"""GetContainerEvents: a subscriber's stream of lifecycle events (the evented PLEG).

Each stream is one subscription to the daemon's event bus (``base.event_bus``) and
holds one rpc worker thread while it is open. With ``events.enable`` off the rpc
ends at once with OK, as CRI-O's does. A subscriber that falls
``events.subscriber_queue`` events behind is cut off: logged, counted in
peapod_container_events_dropped_subscribers, and its stream ends with
RESOURCE_EXHAUSTED after the events already sent (UNAVAILABLE when the daemon
shuts down). If the stream is still blocked sending to a client that reads nothing,
it is reset ``DROP_GRACE`` seconds later, so a stuck client can hold neither a
worker thread nor the shutdown. A cancelled call leaves nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.event_bus import Subscription
from cri.convert.events import to_pb_event
from oci.container.events import LifecycleEvent

if TYPE_CHECKING:
    from cri.services import Services

log = logging.getLogger("peapod.events")

DROP_GRACE = 5.0  # seconds a dropped subscriber's stream may stay blocked in a send


class _Reset:
    """Resets an ended subscription's call if it has not ended ``DROP_GRACE`` s later."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context
        self._timer: threading.Timer | None = None
        self._done = False
        self._lock = threading.Lock()

    def arm(self) -> None:
        with self._lock:
            if self._done or self._timer is not None:
                return
            self._timer = threading.Timer(DROP_GRACE, self._fire)
            self._timer.daemon = True
            self._timer.name = "events-drop-reset"
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
        log.warning("resetting an event subscriber that reads nothing",
                    extra={"peer": self._context.peer()})
        self._context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)  # counted as an error
        self._context.cancel()

    def done(self) -> None:
        """The call ended: nothing to reset; stop the timer's thread."""
        with self._lock:
            self._done = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()


def get_container_events(
    d: Services, req: pb.GetEventsRequest, ctx: grpc.ServicerContext
) -> Iterator[pb.ContainerEventResponse]:
    """Lifecycle events from now on (plus start-up ones, just after a restart)."""
    if not d.config.events.enable:
        return
    reset = _Reset(ctx)
    peer = ctx.peer()

    def ended(sub: Subscription[LifecycleEvent]) -> None:
        if sub.overflowed:
            d.metrics.events_dropped_subscribers.inc()
            log.warning("event subscriber fell behind; disconnected",
                        extra={"peer": peer, "queue": sub.limit})
        reset.arm()

    sub = d.events.subscribe(d.config.events.subscriber_queue, peer, ended)
    d.metrics.events_subscribers.inc()
    try:
        if not (ctx.add_callback(sub.close) and ctx.add_callback(reset.done)):
            return  # the call has ended already
        log.info("event subscriber connected", extra={"peer": peer})
        while True:
            event = sub.next()
            if event is None:
                return
            yield to_pb_event(event)
    finally:
        sub.close()
        reset.done()
        d.metrics.events_subscribers.dec()
        log.info("event subscriber gone", extra={"peer": peer})
