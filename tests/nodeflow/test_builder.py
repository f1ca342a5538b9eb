from nodeflow.builder import WorkflowBuilder
from nodeflow.workflow import Link


def test_the_builder_makes_a_workflow_with_links(catalog, executor):
    b = WorkflowBuilder()
    c = b.add("Constant", value=4)
    s = b.add("Scale", x=c.integer, factor=0.5)
    b.add("Show", id="out", x=s.number)
    workflow = b.build()
    assert list(workflow.nodes) == ["constant1", "scale1", "out"]
    assert workflow.nodes["scale1"].inputs["x"] == Link.to("constant1", "integer")
    assert executor.run(workflow).outputs["out"]["value"] == 2.0
