"""One log line per run event: queued, started, finished, failed, cancelled, interrupted.

Why: the terminal running ``nodeflow serve`` is where a user (or a service manager's journal)
looks first when a picture did not appear. Without these lines it shows nothing between the
banner and a traceback; with them it answers "did my run arrive, how long did it take, which
node failed and why" without opening the editor. Lines go to the ``nodeflow.server.runs``
logger at INFO, always starting with ``run <id>`` so they can be grepped by run.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("nodeflow.server.runs")


def queued(run_id: str, nodes: int, position: int) -> None:
    log.info("run %s queued: %d nodes, position %d", run_id, nodes, position)


def started(run_id: str, nodes: int, waited: float) -> None:
    log.info("run %s started: %d nodes planned, after %.2fs in the queue", run_id, nodes, waited)


def cancelled_in_queue(run_id: str, waited: float) -> None:
    log.info("run %s cancelled while queued, after %.2fs", run_id, waited)


def ended(
    run_id: str,
    status: str,
    seconds: float,
    *,
    nodes: int = 0,
    ran: int = 0,
    cached: int = 0,
    error: dict[str, Any] | None = None,
) -> None:
    """A run that started has ended with ``status``.

    ``nodes`` were planned (0 if it never got that far), ``ran`` executed and ``cached`` reused;
    ``error`` is as the run record stores it (``node``, ``node_type``, ``message``).
    """
    if status == "finished":
        log.info(
            "run %s finished in %.2fs: %d nodes (%d ran, %d cached)",
            run_id,
            seconds,
            nodes,
            ran,
            cached,
        )
        return
    error = error or {}
    progress = f" ({ran + cached} of {nodes} nodes done)" if nodes else ""
    where = f" in node {error['node']!r}" if error.get("node") else ""
    if error.get("node_type"):
        where += f" ({error['node_type']})"
    if status == "failed":
        message = error.get("message") or "no message"
        log.info("run %s failed after %.2fs%s%s: %s", run_id, seconds, progress, where, message)
    elif status == "interrupted":
        log.info(
            "run %s interrupted by the server stopping, after %.2fs%s%s",
            run_id,
            seconds,
            progress,
            where,
        )
    else:
        log.info("run %s %s after %.2fs%s%s", run_id, status, seconds, progress, where)
