"""The ``nodeflow`` command line: run, validate and inspect workflows without a server.

Exit codes: 0 success, 1 a node failed, 2 the workflow (or the command line) is invalid,
130 the run was interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from nodeflow import PLUGIN_API_VERSION, model_paths
from nodeflow import events as ev
from nodeflow.context import Environment
from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.imports import load_path
from nodeflow.model_paths import ModelPathsInvalid
from nodeflow.plaintext import first_paragraph, summary
from nodeflow.plugins import Catalog, call_each, load_catalog
from nodeflow.runtime.device import DTYPES
from nodeflow.runtime.models import SIZE_HELP, parse_bytes
from nodeflow.validate import validate
from nodeflow.workflow import Workflow, json_schema

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; without ``argv`` it is the program (``nodeflow``, ``-m nodeflow``)."""
    owns_process = argv is None
    if owns_process:  # this process's own command: it ends when main returns
        _exit_without_collecting()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    _add_plugin_options(pre)
    early, _ = pre.parse_known_args(argv)
    catalog = _load(early)

    parser = _parser(catalog)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_INVALID
    args.catalog = catalog
    args.owns_process = owns_process
    try:
        return int(args.func(args) or 0)
    except WorkflowInvalid as exc:
        _print_issues(exc.issues, exc.source)
        return EXIT_INVALID
    except ModelPathsInvalid as exc:
        print(f"--extra-model-paths: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:  # `nodeflow nodes | head`: the reader has what it wanted
        _silence_stdout()
        return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into the closed pipe is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _exit_without_collecting() -> None:
    """Spare the process's exit the cycle collector's passes over everything a run imported.

    Interpreter shutdown clears module after module and collects cycles in between; with torch,
    diffusers and transformers loaded that is some 400,000 objects and about a second of a small
    machine's time (see BENCHMARKS.md, "Cold start"). Frozen (``gc.freeze``) at exit, they are
    not scanned; they are still freed by reference counting, and the other exit handlers still
    run first (this one is registered before the command runs, so it runs after theirs).
    """
    global _freezes_at_exit
    if not _freezes_at_exit:
        _freezes_at_exit = True
        atexit.register(_freeze_at_exit)


def _freeze_at_exit() -> None:
    gc.disable()
    gc.freeze()


_freezes_at_exit = False


def _add_plugin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--disable-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load this plugin (repeatable; also NODEFLOW_DISABLE_PLUGINS=a,b)",
    )
    parser.add_argument(
        "--no-plugins",
        action="store_true",
        help="safe mode: load only the built-in node pack, no third-party plugins",
    )


def _load(args: argparse.Namespace) -> Catalog:
    return load_catalog(**_catalog_options(args))


def _catalog_options(args: argparse.Namespace) -> dict[str, Any]:
    disabled = set(args.disable_plugin)
    disabled |= {n.strip() for n in os.environ.get("NODEFLOW_DISABLE_PLUGINS", "").split(",")}
    return {"disabled": sorted(disabled - {""}), "builtin_only": args.no_plugins}


def _parser(catalog: Catalog) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodeflow", description=first_paragraph(__doc__))
    _add_plugin_options(parser)
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run a workflow file")
    run.add_argument("workflow", type=Path)
    run.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="override an input (VALUE is parsed as JSON, else taken as text)",
    )
    run.add_argument("--target", action="append", help="run only this node and what it needs")
    _add_env_options(run)
    run.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1")
    run.add_argument("--dtype", default="auto", choices=DTYPES)
    _add_vram_option(run)
    run.add_argument("--quiet", action="store_true", help="print only where outputs went")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "validate", help="check a workflow file (and the files it picks) without running it"
    )
    check.add_argument("workflow", type=Path)
    check.add_argument("--json", action="store_true", help="print the errors as JSON")
    check.add_argument(
        "--models-dir", type=Path, help="where its models are looked up (default: ./models)"
    )
    check.add_argument(
        "--input-dir", type=Path, help="where its input pictures are looked up (default: ./input)"
    )
    _add_extra_model_paths_option(check)
    check.set_defaults(func=cmd_validate)

    nodes = sub.add_parser("nodes", help="list node types, by plugin and category")
    nodes.add_argument("--json", action="store_true")
    nodes.set_defaults(func=cmd_nodes)

    plugins = sub.add_parser("plugins", help="list loaded plugins and the ones that failed")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    serve = sub.add_parser("serve", help="start the HTTP/websocket server")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    serve.add_argument("--port", type=int, default=8188)
    _add_env_options(serve)
    serve.add_argument("--device", default="auto")
    serve.add_argument("--dtype", default="auto", choices=DTYPES)
    _add_vram_option(serve)
    serve.add_argument(
        "--db", type=Path, help="run queue and history (default: nodeflow-runs.sqlite3)"
    )
    serve.add_argument(
        "--auth-token", help="required on every request; needed to bind a non-loopback address"
    )
    serve.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback bind without a token"
    )
    serve.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run workers as Ray actors: on a cluster (auto, or its address), or on a local Ray "
        "this server starts (no ADDRESS)",
    )
    serve.add_argument(
        "--workers", type=int, metavar="N", help="worker actors (default 1; implies --ray)"
    )
    serve.add_argument(
        "--devices",
        metavar="LIST",
        help="one worker actor per device, e.g. cuda:0,cuda:1 (implies --ray)",
    )
    serve.set_defaults(func=cmd_serve)

    schema = sub.add_parser("schema", help="print the workflow file's JSON Schema")
    schema.set_defaults(func=cmd_schema)

    if catalog.manager is not None:
        # each plugin adds its subcommands; one that raises is recorded, not fatal
        list(call_each(catalog.manager, catalog, "nodeflow_cli", subparsers=sub))
    return parser


def _add_extra_model_paths_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--extra-model-paths",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="ComfyUI's extra_model_paths.yaml: more model folders (an existing ComfyUI or A1111 "
        "install's); repeatable. One named extra_model_paths.yaml beside the models dir or in the "
        "working folder is read by itself",
    )


def _add_env_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, help="default: ./models")
    _add_extra_model_paths_option(parser)
    parser.add_argument("--output-dir", type=Path, help="default: ./output")
    parser.add_argument("--input-dir", type=Path, help="default: ./input")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="let loaders read pickle weight files (.ckpt, .pt); pickles can run code, so only "
        "for files you trust (tensors are still loaded with weights_only=True)",
    )


def _add_vram_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vram-budget",
        type=_vram_budget,
        default="auto",
        metavar="SIZE",
        help="most model weights kept on the GPU; the least recently used models move to the "
        f"CPU to stay under it. SIZE is {SIZE_HELP}. auto (the default): on CUDA the GPU "
        "memory this process can use, less max(20%%, 1 GiB) for activations; no limit on "
        "cpu/mps",
    )


def _vram_budget(text: str) -> int | None:
    """argparse type for --vram-budget: bad sizes become a usage error (exit 2) naming it."""
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def environment(args: argparse.Namespace) -> Environment:
    files = [p.resolve() for p in getattr(args, "extra_model_paths", None) or []]
    files += [p for p in model_paths.discover(args.models_dir or Path("models")) if p not in files]
    return Environment.from_dirs(
        args.models_dir,
        getattr(args, "output_dir", None),
        args.input_dir,
        allow_pickle=getattr(args, "allow_pickle", False),
        extra_model_dirs=model_paths.read_all(files),
    )


# --- commands -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from nodeflow.executor import Executor
    from nodeflow.runtime import Runtime

    workflow = _read(args)
    if args.sets:
        workflow = workflow.with_values(dict(_parse_set(s) for s in args.sets))
    executor = Executor(
        args.catalog,
        env=environment(args),
        runtime=Runtime(args.device, args.dtype, args.vram_budget),
        previews=False,  # a terminal shows no pictures: skip making them every step
    )
    if not args.quiet:
        executor.subscribe(ProgressPrinter(sys.stderr))
    try:
        result = executor.run(workflow, targets=args.target)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if result.status == "failed" and result.error:
        err = result.error
        print(f"error in node {err.node!r} ({err.node_type}): {err.message}", file=sys.stderr)
        if os.environ.get("NODEFLOW_TRACEBACK"):
            print(err.traceback, file=sys.stderr)
        return EXIT_FAILED
    if result.status == "cancelled":
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    for node_id, report in result.outputs.items():
        for path in report.get("files", []):
            print(f"{node_id}: {path}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        workflow = _read(args)
        _, issues = validate(workflow, args.catalog, env=environment(args))
    except WorkflowInvalid as exc:
        issues = exc.issues
    if args.json:
        print(json.dumps({"ok": not issues, "errors": [i.to_json() for i in issues]}, indent=2))
    elif issues:
        _print_issues(issues, str(args.workflow))
    else:
        print(f"{args.workflow}: ok")
    return EXIT_INVALID if issues else EXIT_OK


def cmd_nodes(args: argparse.Namespace) -> int:
    catalog: Catalog = args.catalog
    data = catalog.to_json()["nodes"]
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for spec in data.values():
        groups.setdefault((spec["plugin"], spec["category"]), []).append(spec)
    name_width = max((len(name) for name in data), default=0)
    # a terminal gets lines of its width (never too narrow to read), a pipe or a log 120 columns
    columns = shutil.get_terminal_size((120, 24)).columns
    text_width = max(columns - name_width - 3, 40)
    for (plugin, category), specs in sorted(groups.items()):
        print(f"{plugin} / {category}")
        for spec in specs:
            print(f"  {spec['type']:<{name_width}} {summary(spec['description'], text_width)}")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    catalog: Catalog = args.catalog
    if args.json:
        data = catalog.to_json()
        keys = ("plugin_api_version", "plugins", "failures", "disabled", "loaders", "extensions")
        print(json.dumps({key: data[key] for key in keys}, indent=2))
        return EXIT_OK
    print(f"nodeflow plugin API {PLUGIN_API_VERSION}")
    for plugin in catalog.plugins:
        count = sum(1 for owner in catalog.node_plugins.values() if owner == plugin.name)
        kind = "built-in" if plugin.builtin else f"api {plugin.api_version or '? (assumed 1)'}"
        print(f"ok        {plugin.name:<16} {count:>3} nodes  ({plugin.origin}; {kind})")
    for info in catalog.disabled:
        print(f"disabled  {info.name:<16}            ({info.origin})")
    for failure in catalog.failures:
        origin = f" ({failure.distribution})" if failure.distribution else ""
        print(f"FAILED    {failure.plugin:<16}{origin} in {failure.stage}: {failure.error}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import ipaddress

    from aiohttp import web

    from nodeflow.executor import Executor
    from nodeflow.runtime import Runtime
    from nodeflow.server import logs
    from nodeflow.server.app import SHUTDOWN_TIMEOUT, Server, ServerConfig
    from nodeflow.server.store import RunStore

    try:
        loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not args.auth_token and not args.insecure:
        print(
            f"refusing to serve on {args.host} without --auth-token: anyone who can reach it "
            "could run workflows and read outputs (use --insecure to do it anyway)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    try:
        workers = _workers(args)
    except ValueError as exc:
        print(f"nodeflow serve: {exc}", file=sys.stderr)
        return EXIT_INVALID
    quick_exit = _QuickExit() if getattr(args, "owns_process", False) else None
    logs.configure()
    env = environment(args)
    runtime = Runtime(args.device, args.dtype, args.vram_budget)
    executor = Executor(args.catalog, env=env, runtime=runtime)
    store = RunStore(args.db or Path("nodeflow-runs.sqlite3"))
    extra = set() if loopback else {f"{args.host}:{args.port}"}
    config = ServerConfig(host=args.host, port=args.port, token=args.auth_token, extra_hosts=extra)
    try:
        server = Server(args.catalog, executor, store, config, **workers)
    except ConnectionError as exc:  # --ray ADDRESS: no cluster there
        store.close()
        print(f"nodeflow serve: cannot reach Ray: {exc}", file=sys.stderr)
        return EXIT_INVALID
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"nodeflow: serving http://{shown}:{args.port}/ (API under /api, events at /api/ws)")
    try:
        web.run_app(
            server.app(),
            host=args.host,
            port=args.port,
            print=None,
            access_log_class=logs.AccessLogger,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
    finally:
        store.close()
    if quick_exit is not None:
        quick_exit.code = EXIT_OK
    return EXIT_OK


def _workers(args: argparse.Namespace) -> dict[str, Any]:
    """Server keyword arguments for the workers asked for: none (one thread, no Ray imported)
    or a pool of Ray actors."""
    if args.ray is None and args.workers is None and args.devices is None:
        return {}
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be 1 or more")
    if devices and args.workers not in (None, len(devices)):
        raise ValueError("--workers and --devices disagree: one worker per device")
    import functools

    from nodeflow.server.ray_pool import PoolConfig, RayPool

    pool = PoolConfig(
        catalog_factory=functools.partial(load_catalog, **_catalog_options(args)),
        workers=args.workers or 1,
        address=None if args.ray in (None, "local") else args.ray,
        devices=devices,
        device=args.device,
        dtype=args.dtype,
        vram_budget=args.vram_budget,
    )
    return {"workers": functools.partial(RayPool, config=pool)}


class _QuickExit:
    """Skip the interpreter's teardown once a server process has shut down cleanly.

    Why: with torch and diffusers imported, freeing every module at exit takes 1-2 s (more on
    a busy machine), so a stopped server lingered that long after SIGTERM, and service managers
    and terminals waited for it. By the time this runs the run store is committed and closed,
    the sockets are closed and every other exit handler has run, so nothing is left that the
    operating system does not reclaim anyway.

    How: registered with :mod:`atexit` before the server starts, so it runs after every handler
    registered later (torch's included, and after Python has joined non-daemon threads); it
    flushes logging and the standard streams and ends the process with ``code``. If the server
    did not shut down cleanly ``code`` stays None and the exit proceeds normally (a traceback,
    status 1). Only used when :func:`main` is the program, never for an in-process caller.
    """

    def __init__(self) -> None:
        self.code: int | None = None
        atexit.register(self)

    def __call__(self) -> None:
        if self.code is None:
            return
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(self.code)


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


# --- helpers ------------------------------------------------------------------------------


def _read(args: argparse.Namespace) -> Workflow:
    """The workflow file: native, or another format a plugin imports (a ComfyUI workflow or
    PNG); what the import could only approximate is said on stderr."""
    imported = load_path(args.workflow, args.catalog.loaders)
    for warning in imported.warnings:
        print(f"{args.workflow}: warning: {warning}", file=sys.stderr)
    return imported.workflow


def _parse_set(text: str) -> tuple[tuple[str, str], Any]:
    target, sep, raw = text.partition("=")
    node_id, dot, name = target.partition(".")
    if not sep or not dot or not node_id or not name:
        raise WorkflowInvalid(
            [Issue(None, None, "bad_set", f"--set {text!r}: expected NODE.INPUT=VALUE")]
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return (node_id, name), value


def _print_issues(issues: list[Issue], source: str | None) -> None:
    head = f"{source}: " if source else ""
    print(f"{head}invalid workflow ({len(issues)} problem(s)):", file=sys.stderr)
    for issue in issues:
        print(f"  {issue}", file=sys.stderr)


class ProgressPrinter:
    """Per-node lines, and a progress bar for nodes that report steps."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.total = 0
        self.done = 0
        self.last_bar: tuple[str, int] | None = None

    def __call__(self, event: ev.Event) -> None:
        write = self.stream.write
        match event:
            case ev.RunStarted(nodes=nodes):
                self.total = len(nodes)
            case ev.NodeCached(node=node, node_type=node_type):
                self.done += 1
                write(f"[{self.done}/{self.total}] {node} ({node_type}): cached\n")
            case ev.NodeStarted(node=node, node_type=node_type):
                self.done += 1
                write(f"[{self.done}/{self.total}] {node} ({node_type})\n")
            case ev.NodeProgress(node=node, value=value, max=maximum):
                self._bar(node, value, maximum)
            case ev.NodeFinished(node=node, seconds=seconds):
                if self.tty and self.last_bar:
                    write("\n")
                self.last_bar = None
                write(f"      {node} done in {seconds:.2f}s\n")
            case ev.RunFinished(seconds=seconds, executed=executed, cached=cached):
                write(f"finished in {seconds:.2f}s: {len(executed)} ran, {len(cached)} cached\n")
        self.stream.flush()

    def _bar(self, node: str, value: float, maximum: float) -> None:
        fraction = value / maximum if maximum else 1.0
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"      [{bar}] {value:g}/{maximum:g}"
        if self.tty:
            self.stream.write("\r" + line)
            self.last_bar = (node, int(value))
        else:
            # in a log, a line per quarter is enough
            quarter = int(4 * fraction)
            if self.last_bar is None or self.last_bar[1] != quarter:
                self.stream.write(line + "\n")
                self.last_bar = (node, quarter)


if __name__ == "__main__":
    sys.exit(main())
