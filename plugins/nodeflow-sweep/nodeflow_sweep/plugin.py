"""The plugin module the ``sweep`` entry point names: hooks only."""

from __future__ import annotations

from typing import Any

from nodeflow import hookimpl
from nodeflow_sweep import sweeps, timings

NODEFLOW_API = 1
"""The nodeflow plugin API this plugin is written for."""


@hookimpl
def nodeflow_nodes() -> list[Any]:
    return [sweeps.cfg_sweep, sweeps.seed_sweep, sweeps.prompt_sweep]  # sweep.CFGSweep, ...


@hookimpl
def nodeflow_event_listeners() -> list[Any]:
    return [timings.record]


@hookimpl
def nodeflow_routes(routes: Any) -> None:
    routes.get("/recent", timings.recent)  # GET /api/plugins/sweep/recent
