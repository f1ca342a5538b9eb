from testnodes import make_workflow

from nodeflow.graph import plan
from nodeflow.validate import bind

DIAMOND = {
    "c": ("Constant", {"value": 4}),
    "sp": ("Split", {"x": "@c.integer"}),
    "lo": ("Scale", {"x": "@sp.low"}),
    "hi": ("Scale", {"x": "@sp.high"}),
    "sum": ("Add", {"a": "@lo.number", "b": "@hi.number"}),
    "o": ("Show", {"x": "@sum.number"}),
    "unused": ("Scale", {"x": "@c.integer"}),
    "lonely": ("Constant", {}),
    "o2": ("Show", {"x": "@unused.number"}),
}


def test_plan_is_the_targets_and_their_ancestors_in_topological_order(catalog):
    bound = bind(make_workflow(DIAMOND), catalog)
    everything = plan(bound)
    assert set(everything.order) == set(DIAMOND) - {"lonely"}
    position = {n: i for i, n in enumerate(everything.order)}
    for source, target in bound.graph.edges:
        if source in position and target in position:
            assert position[source] < position[target]

    one = plan(bound, ["o"])
    assert one.targets == ["o"]
    assert set(one.order) == {"c", "sp", "lo", "hi", "sum", "o"}
    assert plan(bound, ["lo"]).order == ["c", "sp", "lo"]
