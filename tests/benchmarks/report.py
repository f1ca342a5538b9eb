"""Writing one benchmark's section of BENCHMARKS.md, leaving the other benchmarks' sections be."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

HEADER = (
    "# Benchmarks\n\n"
    "Every figure here was measured, on the machine and at the date its section names.\n"
)


def write_section(path: Path, section: str, text: str) -> None:
    """Add or replace the section headed ``section`` with ``text``.

    The file is read right before writing, since other benchmarks write their own sections.
    """
    old = path.read_text() if path.exists() else HEADER
    lines = old.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == section), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if re.match(r"^## (?!#)", lines[i])),
            len(lines),
        )
        kept_after = "\n".join(lines[end:])
        before = "\n".join(lines[:start]).rstrip("\n")
        new = (before + "\n\n" if before else "") + text.rstrip("\n") + "\n"
        if kept_after:
            new += "\n" + kept_after.rstrip("\n") + "\n"
    path.write_text(new)


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def utc_date() -> str:
    """The date as ``date -u`` prints it, for the section's heading lines."""
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())


def machine_summary(*extras: str) -> str:
    """One line naming the machine: cores, CPU, Python, the given versions, and the load."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    parts = [
        f"nproc {len(os.sched_getaffinity(0))}, {cpu_model()}",
        f"Python {platform.python_version()}",
        *extras,
    ]
    return "; ".join(parts) + f"; load average at the end {load}"
