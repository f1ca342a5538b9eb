"""How long recent sweeps took: an event listener collects, a route reports.

Shows the two server-side hooks working together: ``nodeflow_event_listeners`` sees every
executor's events (a sweep node's ``node.finished``), ``nodeflow_routes`` serves what it saw at
``GET /api/plugins/sweep/recent``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from nodeflow import events as ev

if TYPE_CHECKING:
    from aiohttp import web

RECENT: deque[dict[str, Any]] = deque(maxlen=50)
_lock = threading.Lock()


def record(event: ev.Event) -> None:
    """Listener: keep the timing of every finished ``sweep.*`` node."""
    if isinstance(event, ev.NodeFinished) and event.node_type.startswith("sweep."):
        with _lock:
            RECENT.append(
                {
                    "run_id": event.run_id,
                    "node": event.node,
                    "node_type": event.node_type,
                    "seconds": round(event.seconds, 3),
                }
            )


async def recent(request: web.Request) -> web.Response:
    from aiohttp import web  # only the server needs it: loading the plugin must not import it

    with _lock:
        items = list(RECENT)
    return web.json_response({"sweeps": items[::-1]})
