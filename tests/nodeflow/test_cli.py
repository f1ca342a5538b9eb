"""The command line, end to end through ``main()``, with the test nodes installed as a plugin."""

from __future__ import annotations

import json

import pytest

from nodeflow.cli import main

GOOD = {
    "version": 1,
    "nodes": {
        "c": {"type": "testnodes.Constant", "inputs": {"value": 3}},
        "w": {"type": "testnodes.Slow", "inputs": {"x": {"from": "c.integer"}, "steps": 8}},
        "o": {"type": "testnodes.Show", "inputs": {"x": {"from": "w.number"}, "title": "t"}},
    },
}
BAD = {
    "version": 1,
    "nodes": {
        "c": {"type": "testnodes.Constant", "inputs": {"value": "many"}},
        "o": {"type": "testnodes.Show", "inputs": {"x": {"from": "gone.integer"}}},
        "x": {"type": "Nope"},
    },
}


@pytest.fixture(autouse=True)
def test_plugin(install_plugin):
    install_plugin(
        "nodeflow-testnodes",
        "cli_testnodes",
        "from testnodes import nodeflow_nodes, nodeflow_types\n",
        entry_name="testnodes",
    )


@pytest.fixture
def write(tmp_path):
    def write(document, name="w.json"):
        path = tmp_path / name
        path.write_text(json.dumps(document))
        return str(path)

    return write


def test_run_shows_progress_and_sets_inputs(write, capsys, tmp_path):
    code = main(
        [
            "run",
            write(GOOD),
            "--set",
            "c.value=5",
            "--set",
            "o.title=five",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "[1/3] c (testnodes.Constant)" in err and "[2/3] w (testnodes.Slow)" in err
    assert "[##############################] 8/8" in err
    assert "finished in" in err and "3 ran, 0 cached" in err


def test_run_reports_a_failing_node_and_exits_1(write, capsys):
    failing = {
        "version": 1,
        "nodes": {
            "c": {"type": "testnodes.Constant"},
            "f": {
                "type": "testnodes.Fail",
                "inputs": {"x": {"from": "c.integer"}, "message": "nope"},
            },
            "o": {"type": "testnodes.Show", "inputs": {"x": {"from": "f.number"}}},
        },
    }
    assert main(["run", write(failing), "--quiet"]) == 1
    assert "error in node 'f' (testnodes.Fail): nope" in capsys.readouterr().err


def test_run_and_validate_refuse_bad_workflows_with_every_error(write, capsys):
    path = write(BAD)
    assert main(["run", path]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert "c.value:" in err and "o.x:" in err and "x: unknown node type 'Nope'" in err

    assert main(["validate", path, "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert sorted((e["node"], e["input"], e["code"]) for e in report["errors"]) == [
        ("c", "value", "invalid_value"),
        ("o", "x", "missing_node"),
        ("x", None, "unknown_node_type"),
    ]
    assert main(["validate", write(GOOD, "good.json")]) == 0
    assert "ok" in capsys.readouterr().out


def test_malformed_json_and_bad_set_syntax(write, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1,\n"nodes": }')
    assert main(["validate", str(broken)]) == 2
    assert "line 2, column 10" in capsys.readouterr().err
    assert main(["run", write(GOOD), "--set", "novalue"]) == 2
    assert "expected NODE.INPUT=VALUE" in capsys.readouterr().err


def test_nodes_plugins_and_schema(capsys):
    assert main(["nodes"]) == 0
    out = capsys.readouterr().out
    assert "testnodes / math" in out and "Constant" in out and "nodes / sampling" in out
    assert main(["nodes", "--json"]) == 0
    catalog = json.loads(capsys.readouterr().out)
    assert catalog["testnodes.Scale"]["plugin"] == "testnodes"  # third-party: namespaced
    assert catalog["testnodes.Scale"]["display_name"] == "Scale"
    assert catalog["testnodes.Scale"]["inputs"]["factor"]["schema"]["maximum"] == 10
    assert catalog["TextEncode"]["plugin"] == "nodes"  # the built-in pack keeps plain names
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "ok        testnodes" in out and "ok        nodes" in out
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "nodeflow workflow"


def test_failed_plugins_are_listed_and_can_be_disabled(install_plugin, capsys, monkeypatch):
    install_plugin(
        "bad-pack", "bad_pack", "raise ImportError('missing dependency xyz')\n", entry_name="bad"
    )
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert (
        "FAILED    bad" in out and "(bad-pack) in import" in out and "missing dependency xyz" in out
    )
    assert "ok        testnodes" in out  # the others load
    assert main(["plugins", "--json"]) == 0
    (failure,) = [
        f for f in json.loads(capsys.readouterr().out)["failures"] if f["plugin"] == "bad"
    ]
    assert "missing dependency xyz" in failure["error"] and failure["distribution"] == "bad-pack"
    monkeypatch.setenv("NODEFLOW_DISABLE_PLUGINS", "bad")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and "disabled  bad" in out


@pytest.fixture
def runtimes(monkeypatch):
    """Every Runtime the commands build (they import it from nodeflow.runtime when run)."""
    import nodeflow.runtime

    made = []

    class Recorded(nodeflow.runtime.Runtime):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(nodeflow.runtime, "Runtime", Recorded)
    return made


def test_run_passes_the_vram_budget_to_its_runtime(write, tmp_path, runtimes):
    out = ["--quiet", "--output-dir", str(tmp_path / "out")]
    assert main(["run", write(GOOD), "--vram-budget", "1GB", *out]) == 0
    assert main(["run", write(GOOD), "--vram-budget", "1.5GiB", *out]) == 0
    assert main(["run", write(GOOD), *out]) == 0
    assert [r.vram_budget for r in runtimes] == [10**9, 3 * 2**29, None]  # None: auto
    assert runtimes[0].models.budget_bytes == 10**9


def test_serve_passes_the_vram_budget_to_its_runtime(tmp_path, runtimes, monkeypatch):
    from aiohttp import web

    served = []
    monkeypatch.setattr(web, "run_app", lambda app, **kwargs: served.append(app))
    db = str(tmp_path / "runs.sqlite3")
    assert main(["serve", "--db", db, "--vram-budget", "6GB"]) == 0
    assert served and runtimes[0].vram_budget == 6 * 10**9


@pytest.mark.parametrize("command", ["run", "serve"])
@pytest.mark.parametrize("value", ["lots", "-1GB", "6XB"])
def test_a_bad_vram_budget_is_a_usage_error_naming_the_flag(write, capsys, command, value):
    args = [command, write(GOOD)] if command == "run" else [command]
    with pytest.raises(SystemExit) as exc:
        main([*args, f"--vram-budget={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --vram-budget" in err and "invalid size" in err


def test_allow_pickle_is_off_unless_the_user_passes_the_flag(monkeypatch, tmp_path):
    """Only the command line can allow pickles (a workflow cannot): the flag sets the run's
    Environment."""
    import nodeflow.cli

    seen = []
    real = nodeflow.cli.environment

    def recording(args):
        env = real(args)
        seen.append(env.allow_pickle)
        return env

    monkeypatch.setattr(nodeflow.cli, "environment", recording)
    out = ["--quiet", "--output-dir", str(tmp_path / "out")]
    workflow = tmp_path / "w.json"
    workflow.write_text(json.dumps(GOOD))
    assert main(["run", str(workflow), *out]) == 0
    assert main(["run", str(workflow), "--allow-pickle", *out]) == 0
    assert seen == [False, True]


def test_no_plugins_is_safe_mode_with_only_the_builtin_pack(install_plugin, capsys):
    install_plugin("bad-pack", "bad_pack", "raise ImportError('missing dependency')\n", "bad")
    assert main(["--no-plugins", "plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in data["plugins"]] == ["nodes"]
    assert data["failures"] == []  # not even imported
    assert {"testnodes", "bad"} <= {p["name"] for p in data["disabled"]}
    assert main(["--no-plugins", "nodes", "--json"]) == 0
    assert {spec["plugin"] for spec in json.loads(capsys.readouterr().out).values()} == {"nodes"}
    assert main(["--disable-plugin", "testnodes", "nodes", "--json"]) == 0
    assert not any(t.startswith("testnodes.") for t in json.loads(capsys.readouterr().out))


def test_validate_names_the_missing_plugin_and_its_distribution(write, capsys):
    path = write(GOOD)
    assert main(["validate", path]) == 0
    capsys.readouterr()
    assert main(["--disable-plugin", "testnodes", "validate", path, "--json"]) == 2
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert {(e["node"], e["code"]) for e in errors} == {
        ("c", "missing_plugin"),
        ("w", "missing_plugin"),
        ("o", "missing_plugin"),
    }
    assert "plugin 'testnodes' (distribution 'nodeflow-testnodes')" in errors[0]["message"]
    assert "disabled" in errors[0]["message"]


def test_nodeflow_cli_adds_subcommands_and_a_raising_one_is_reported(install_plugin, capsys):
    install_plugin(
        "hello-pack",
        "hello_pack",
        """
from nodeflow import hookimpl

def hello(args):
    print(f"hello {args.who}")
    return 0

@hookimpl
def nodeflow_cli(subparsers):
    sub = subparsers.add_parser("hello", help="say hello")
    sub.add_argument("who")
    sub.set_defaults(func=hello)
""",
        entry_name="hello",
    )
    install_plugin(
        "rude-pack",
        "rude_pack",
        "from nodeflow import hookimpl\n\n@hookimpl\ndef nodeflow_cli(subparsers):\n"
        "    raise RuntimeError('no commands today')\n",
        entry_name="rude",
    )
    assert main(["hello", "ada"]) == 0
    assert capsys.readouterr().out == "hello ada\n"
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "FAILED    rude" in out and "no commands today" in out and "ok        hello" in out


def test_validate_checks_the_files_a_workflow_picks(write, tmp_path, capsys):
    """A missing model fails validation (exit 2) naming the folders searched, not the run."""
    models = tmp_path / "models"
    document = {
        "version": 1,
        "nodes": {
            "model": {"type": "LoadCheckpoint", "inputs": {"path": "mine.safetensors"}},
            "builtin": {"type": "LoadCheckpoint", "inputs": {"path": "demo-sdxl"}},
            "img": {"type": "LoadImage", "inputs": {"path": "red-circle.png"}},  # bundled
            "pos": {"type": "TextEncdoe", "inputs": {"text": "a red circle"}},
            "save": {"type": "SaveImage", "inputs": {"image": {"from": "img.image"}}},
        },
    }
    path = write(document)
    assert main(["validate", path, "--json", "--models-dir", str(models)]) == 2
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert sorted((e["node"], e["input"], e["code"]) for e in errors) == [
        ("model", "path", "file_not_found"),
        ("pos", None, "unknown_node_type"),
    ]
    messages = {e["node"]: e["message"] for e in errors}
    searched = models.resolve() / "checkpoints"
    assert f"no checkpoint 'mine.safetensors' in {searched}" in messages["model"]
    assert "demo" in messages["model"]  # the built-in names are named too
    assert messages["pos"].endswith("did you mean 'TextEncode'?")

    assert main(["run", path, "--models-dir", str(models)]) == 2  # refused before running
    assert "model.path: no checkpoint 'mine.safetensors'" in capsys.readouterr().err

    del document["nodes"]["pos"]
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "mine.safetensors").write_bytes(b"")
    assert main(["validate", write(document), "--models-dir", str(models)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_nodes_and_help_print_plain_text_cut_at_words(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["nodes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not [line for line in lines if "``" in line or ":class:" in line]
    assert max(len(line) for line in lines) <= 80
    cut = [line for line in lines if line.endswith("…")]
    assert cut, "at 80 columns some summaries are cut"
    for line in cut:  # at the end of a word, never inside one
        assert line[-2] not in " ,;:("
    loaders = next(line for line in lines if line.strip().startswith("LoadTextEncoder "))
    assert "(path: CLIP" in loaders  # ``path`` shown as plain text

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "The nodeflow command line" in out and "``" not in out


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """`nodeflow nodes | head -1`: the closed pipe is not an error and prints no traceback."""
    import subprocess
    import sys

    script = "import sys; from nodeflow.cli import main; sys.exit(main(['nodes']))"
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as writer:  # fmt: skip
        # The reader takes nothing and exits; once this process lets go of its copy of the
        # pipe too, the writer's first write finds it closed.
        subprocess.run([sys.executable, "-c", "pass"], stdin=writer.stdout, check=True)
        writer.stdout.close()
        stderr = writer.stderr.read().decode()
    assert writer.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
