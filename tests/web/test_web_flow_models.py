"""SD3 and Flux in the editor: their examples load from the examples list, their new widgets
(Scheduler's ``shift``, TextEncode's ``max_sequence_length``, FluxGuidance's ``guidance``) render
and edit like any other, and the runs finish with a picture (the trained toy demo-sd3; a random
tiny Flux: noise)."""

from __future__ import annotations

import time

import pytest
from webharness import (
    example,
    get_workflow,
    node_ids,
    open_editor,
    queue,
    set_widget,
    wait_image,
    wait_state,
    wait_until,
)

EDITS = {
    # a joint-attention model needs both prompts encoded to one length
    "sd3.json": {
        ("sched", "shift"): 2.0,
        ("pos", "max_sequence_length"): 77,
        ("neg", "max_sequence_length"): 77,
    },
    "flux.json": {("guidance", "guidance"): 4.5, ("pos", "max_sequence_length"): 64},
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_flow_model_example_loads_edits_and_runs(page, shot, nodeflow_server, name):
    open_editor(page)
    page.locator("[data-testid=examples-button]").click()
    page.locator(f'[data-testid=example][data-name="{name}"]').click()
    wait_until(lambda: node_ids(page) == set(example(name)["nodes"]), 10, f"the {name} graph")

    set_widget(page, "sched", "steps", 2)
    for (node_id, widget_name), value in EDITS[name].items():
        set_widget(page, node_id, widget_name, value)
    prefix = f"web-{name.removesuffix('.json')}"
    set_widget(page, "pos", "text", f"a red circle {time.time()}")
    set_widget(page, "save", "prefix", prefix)

    nodes = get_workflow(page)["nodes"]
    for (node_id, widget_name), value in EDITS[name].items():
        assert nodes[node_id]["inputs"][widget_name] == value, (node_id, widget_name)
    assert nodes["sched"]["inputs"]["steps"] == 2

    queue(page)
    state = wait_state(page, "save", ("done", "error"), timeout=120)
    assert state == "done", page.locator("[data-testid=node-error]").all_inner_texts()
    image = wait_image(page, "save")
    shot(f"{prefix}-ran")
    assert (image["width"], image["height"]) == (64, 64), image
    assert len(list(nodeflow_server.output.glob(f"{prefix}_*.png"))) == 1
