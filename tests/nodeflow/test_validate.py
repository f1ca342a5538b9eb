import pytest
from testnodes import make_workflow

from nodeflow.context import Environment
from nodeflow.errors import WorkflowInvalid
from nodeflow.executor import Executor
from nodeflow.validate import bind, validate


def located(issues):
    return sorted((i.node, i.input, i.code) for i in issues)


def test_every_fault_is_reported_at_once(catalog):
    workflow = make_workflow(
        {
            "c": ("Constant", {"value": 5000}),  # invalid: le=1000
            "u": ("Nope", {}),  # unknown type
            "s": ("Scale", {"factor": 2, "speed": 3}),  # unknown input, missing x
            "a": ("Add", {"a": "@ghost.integer", "b": "@c.nothing"}),  # missing node, output
            "l": ("Label", {"text": "hi"}),
            "m": ("Add", {"a": "@l.string"}),  # STRING into Number
            "v": ("Add", {"a": 3}),  # a value where a link belongs
            "o": (
                "Show",
                {"x": "@s.number", "title": "@c.integer"},
            ),  # Integer into a STRING widget
        }
    )
    bound, issues = validate(workflow, catalog)
    assert bound is None
    assert located(issues) == sorted(
        [
            ("c", "value", "invalid_value"),
            ("u", None, "unknown_node_type"),
            ("s", "speed", "unknown_input"),
            ("s", "x", "missing_input"),
            ("a", "a", "missing_node"),
            ("a", "b", "missing_output"),
            ("m", "a", "type_mismatch"),
            ("v", "a", "value_for_socket"),
            ("o", "title", "type_mismatch"),
        ]
    )
    messages = {(i.node, i.input): i.message for i in issues}
    assert "less than or equal to 1000" in messages[("c", "value")]
    assert "'Nope'" in messages[("u", None)]
    assert "its inputs: x, factor, mode" in messages[("s", "speed")]
    assert "its outputs: integer" in messages[("a", "b")]
    assert "STRING output cannot feed a Number input" in messages[("m", "a")]


def test_a_cycle_is_reported_with_its_members(catalog):
    workflow = make_workflow(
        {
            "a": ("Add", {"a": "@c.number"}),
            "b": ("Add", {"a": "@a.number"}),
            "c": ("Add", {"a": "@b.number"}),
            "self": ("Add", {"a": "@self.number"}),
            "ok": ("Constant", {}),
            "o": ("Show", {"x": "@ok.integer"}),
        }
    )
    _, issues = validate(workflow, catalog)
    cycles = [i for i in issues if i.code == "cycle"]
    assert len(cycles) == 2
    assert {i.node for i in cycles} == {"a", "self"}
    big = next(i for i in cycles if i.node == "a")
    assert "(nodes: a, b, c)" in big.message
    assert len(issues) == 2


def test_no_output_node_is_an_error_unless_targets_are_given(catalog):
    workflow = make_workflow({"c": ("Constant", {"value": 1})})
    _, issues = validate(workflow, catalog)
    assert located(issues) == [(None, None, "no_output")]
    assert validate(workflow, catalog, targets=["c"])[1] == []
    assert located(validate(workflow, catalog, targets=["zz"])[1]) == [
        ("zz", None, "unknown_target")
    ]


def test_subtypes_primitive_links_and_defaults_bind(catalog):
    workflow = make_workflow(
        {
            "c": ("Constant", {"value": "7"}),
            "i": ("ToInt", {"x": "@c.integer"}),
            "k": ("Constant", {"value": "@i.int"}),  # a widget fed by an INT output
            "s": ("Scale", {"x": "@k.integer", "factor": "@i.int"}),  # INT into FLOAT widget
            "o": ("Show", {"x": "@s.number"}),
        }
    )
    bound = bind(workflow, catalog)
    assert bound.nodes["c"].values == {"value": 7}  # coerced
    assert bound.nodes["s"].values == {"mode": "mul"}  # defaults filled, linked widgets left out
    assert set(bound.nodes["s"].links) == {"x", "factor"}
    assert bound.nodes["o"].values == {"title": ""}
    assert sorted(bound.graph.edges) == [("c", "i"), ("i", "k"), ("i", "s"), ("k", "s"), ("s", "o")]


# --- files widgets pick (Widget(files=...)), checked through the FileKind a plugin registers ----


@pytest.fixture
def env(tmp_path):
    """Folders where ``input`` files are found: ``in/`` (with a.txt), then ``models/numbers``."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("1")
    (tmp_path / "models" / "numbers").mkdir(parents=True)
    (tmp_path / "models" / "numbers" / "b.txt").write_text("2")
    return Environment.from_dirs(tmp_path / "models", tmp_path / "out", tmp_path / "in")


def test_a_missing_file_is_located_and_names_the_folders_searched(catalog, env, tmp_path):
    workflow = make_workflow(
        {
            "ok": ("Files", {"path": "a.txt", "path_2": "b.txt"}),  # in either folder
            "abs": ("Files", {"path": str(tmp_path / "in" / "a.txt")}),  # an absolute path
            "builtin": ("Files", {"path": "zero"}),  # needs no file
            "gone": ("Files", {"path": "seven.txt", "path_2": "nothing.txt"}),
            "typo": ("Files", {"path": "a.tx"}),
            "out": ("Files", {"path": "../../in/a.txt"}),  # a file, but reached from outside
            "gone_abs": ("Files", {"path": str(tmp_path / "nope.txt")}),
        }
    )
    assert validate(workflow, catalog)[1] == []  # no folders given: nothing to check against
    bound, issues = validate(workflow, catalog, env=env)
    assert bound is None
    assert located(issues) == [
        ("gone", "path", "file_not_found"),
        ("gone", "path_2", "file_not_found"),
        ("gone_abs", "path", "file_not_found"),
        ("out", "path", "file_not_found"),
        ("typo", "path", "file_not_found"),
    ]
    messages = {(i.node, i.input): i.message for i in issues}
    folders = f"{tmp_path / 'in'} or {tmp_path / 'models' / 'numbers'}"
    assert messages["gone", "path"] == f"no number file 'seven.txt' in {folders} (built-in: zero)"
    assert messages["typo", "path"].endswith("; did you mean 'a.txt'?")
    assert "is not inside the folders" in messages["out", "path"]
    assert "no such file" in messages["gone_abs", "path"]
    with pytest.raises(WorkflowInvalid):
        bind(workflow, catalog, env=env)


def test_linked_and_empty_optional_file_values_are_not_checked(catalog, env):
    workflow = make_workflow(
        {
            "l": ("Label", {"text": "not-a-file.txt"}),
            "linked": ("Files", {"path": "@l.string"}),  # known only at run time
            "none": ("Files", {"path": "a.txt", "path_2": ""}),  # "" is path_2's default: none
            "empty": ("Files", {"path": ""}),  # but path has no empty default
        }
    )
    _, issues = validate(workflow, catalog, env=env)
    assert located(issues) == [("empty", "path", "file_not_found")]
    assert issues[0].message == "no number file chosen"


def test_the_executor_checks_files_against_its_own_folders(catalog, env):
    workflow = make_workflow({"f": ("Files", {"path": "b.txt"})})
    assert Executor(catalog, env=env).run(workflow).ok
    elsewhere = Environment.from_dirs(env.models_dir / "x", env.output_dir, env.input_dir / "x")
    with pytest.raises(WorkflowInvalid) as raised:
        Executor(catalog, env=elsewhere).run(workflow)
    assert located(raised.value.issues) == [("f", "path", "file_not_found")]


# --- did you mean -------------------------------------------------------------------------------


def test_unknown_names_get_the_closest_known_one_suggested(catalog):
    workflow = make_workflow(
        {
            "c": ("Constnat", {}),
            "k": ("Constant", {"valeu": 3}),
            "s": ("Scale", {"x": "@k.integr"}),
            "t": ("Scale", {"x": "@kk.integer"}),
            "o": ("Show", {"x": "@s.number"}),
            "far": ("Zzyzx", {}),
        }
    )
    _, issues = validate(workflow, catalog, targets=["o", "oo"])
    messages = {(i.node, i.input): i.message for i in issues}
    assert messages["c", None] == "unknown node type 'Constnat'; did you mean 'Constant'?"
    assert messages["k", "valeu"].endswith("(its inputs: value); did you mean 'value'?")
    assert messages["s", "x"].endswith("did you mean 'integer'?")
    assert messages["t", "x"].endswith("there is no node 'kk'; did you mean 'k'?")
    assert messages["oo", None] == "no node 'oo' to run; did you mean 'o'?"
    assert "did you mean" not in messages["far", None]
