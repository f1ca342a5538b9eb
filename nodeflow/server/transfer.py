"""Files between the server and workers that share no disk with it.

A remote worker writes its outputs into its own temporary output folder. It sends each new file
back as bytes (:class:`OutputFolder` finds them), and the server writes them into its own output
folder under the same relative name (:class:`Placer`). Two workers both counting
``txt2img_00001.png`` would collide there, so a name already taken gets the next free counter
instead, and the reports that name the file (``images`` entries and ``files`` paths) are
rewritten to the server's name. The other way, the input files a workflow names travel with the
run (:func:`input_files`) and the worker writes them into its own input folder with the same
modification time, so file fingerprints (and cache keys) agree with the server's.

No Ray here: plain bytes and paths, so it is tested without a cluster.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from nodeflow.server.security import PathRefused, contained_file

#: A file that travels: its bytes and modification time (ns).
Payload = tuple[bytes, int]

_COUNTER = re.compile(r"^(.*?)(\d+)$")


def input_files(workflow: dict[str, Any], input_dir: Path) -> dict[str, Payload]:
    """The files of ``input_dir`` that the workflow's string values name, with their bytes."""
    found: dict[str, Payload] = {}
    for spec in workflow.get("nodes", {}).values():
        for value in (spec.get("inputs") or {}).values():
            if not isinstance(value, str) or not value or value in found:
                continue
            try:
                path = contained_file(input_dir, value)
            except (PathRefused, OSError, ValueError):
                continue
            found[value] = (path.read_bytes(), path.stat().st_mtime_ns)
    return found


def write_inputs(input_dir: Path, files: dict[str, Payload]) -> None:
    """On a worker: make ``input_dir`` hold these files, with the sender's modification times."""
    root = input_dir.resolve()
    for name, (data, mtime_ns) in files.items():
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            continue  # the server only sends contained names; never write outside anyway
        stat = path.stat() if path.is_file() else None
        if stat is not None and stat.st_size == len(data) and stat.st_mtime_ns == mtime_ns:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(mtime_ns, mtime_ns))


class OutputFolder:
    """On a worker: finds the files written into its output folder since the last look.

    A file sent is emptied (its name stays, so counters such as SaveImage's keep counting),
    which keeps the worker's temporary folder from growing with every picture.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._seen: dict[str, int] = {}

    def new_files(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(self.folder).as_posix()
            stat = path.stat()
            if self._seen.get(rel) == stat.st_mtime_ns:
                continue
            found[rel] = path.read_bytes()
            path.write_bytes(b"")
            self._seen[rel] = path.stat().st_mtime_ns
        return found


class Placer:
    """On the server: writes workers' files into the output folder and renames their reports.

    ``names`` maps a worker's relative names to the server's, per worker (a replaced worker
    starts a new map). One lock for every worker, so two never pick the same free name.
    """

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir.resolve()
        self._lock = threading.Lock()

    def place(self, files: dict[str, bytes], names: dict[str, str]) -> None:
        with self._lock:
            for rel, data in files.items():
                if rel not in names:
                    names[rel] = self._free_name(rel)
                target = (self.output_dir / names[rel]).resolve()
                if not target.is_relative_to(self.output_dir):
                    raise PathRefused(400, f"worker sent a file outside the output folder: {rel}")
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".part")
                partial.write_bytes(data)
                partial.replace(target)

    def _free_name(self, rel: str) -> str:
        if not (self.output_dir / rel).exists():
            return rel
        folder, _, name = rel.rpartition("/")
        stem, dot, suffix = name.partition(".")
        match = _COUNTER.match(stem)
        base, number, width = (
            (match[1], int(match[2]), len(match[2])) if match else (f"{stem}_", 0, 1)
        )
        while True:
            number += 1
            candidate = f"{base}{number:0{width}d}{dot}{suffix}"
            candidate = f"{folder}/{candidate}" if folder else candidate
            if not (self.output_dir / candidate).exists():
                return candidate

    def report(self, report: Any, names: dict[str, str], worker_output: str) -> Any:
        """A node's report with the worker's file names turned into the server's."""
        if not isinstance(report, dict):
            return report
        report = dict(report)
        if isinstance(report.get("images"), list):
            report["images"] = [self._image(image, names) for image in report["images"]]
        if isinstance(report.get("files"), list):
            prefix = worker_output.rstrip("/") + "/"
            report["files"] = [
                str(self.output_dir / names.get(f[len(prefix) :], f[len(prefix) :]))
                if isinstance(f, str) and f.startswith(prefix)
                else f
                for f in report["files"]
            ]
        return report

    @staticmethod
    def _image(image: Any, names: dict[str, str]) -> Any:
        if not isinstance(image, dict) or image.get("type", "output") not in ("output", "preview"):
            return image
        subfolder, filename = image.get("subfolder", ""), image.get("filename")
        if not isinstance(filename, str) or not isinstance(subfolder, str):
            return image
        rel = "/".join(p for p in (*subfolder.split("/"), filename) if p not in ("", "."))
        renamed = names.get(rel)
        if renamed is None or renamed == rel:
            return image
        folder, _, name = renamed.rpartition("/")
        return {**image, "subfolder": folder, "filename": name}
