"""``nodeflow import-comfy FILE [-o OUT]``: a ComfyUI workflow (JSON or PNG) as a nodeflow file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nodeflow.errors import Issue, WorkflowInvalid
from nodeflow.imports import load_path


def add_import_command(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser(
        "import-comfy",
        help="translate a ComfyUI workflow (API or UI format, or a ComfyUI PNG) into a nodeflow "
        "workflow file",
    )
    command.add_argument("file", type=Path, help="the ComfyUI .json or .png")
    command.add_argument(
        "-o", "--output", type=Path, help="where to write the workflow (default: stdout)"
    )
    command.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    imported = load_path(args.file, args.catalog.loaders)
    if not imported.format.startswith("comfyui"):
        issue = Issue(None, None, "format", "not a ComfyUI workflow (API or UI format)")
        raise WorkflowInvalid([issue], str(args.file))
    for warning in imported.warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    if args.output is None:
        sys.stdout.write(imported.workflow.dumps())
    else:
        imported.workflow.save(args.output)
        print(f"{args.output}: {len(imported.workflow.nodes)} nodes", file=sys.stderr)
    return 0
