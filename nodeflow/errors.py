"""Structured problems with a workflow: one shape for the CLI, the HTTP API and the editor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One problem, located: ``node`` and ``input`` are None where the problem is not theirs."""

    node: str | None
    input: str | None
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = self.node or "workflow"
        if self.input:
            where += f".{self.input}"
        return f"{where}: {self.message} [{self.code}]"


class WorkflowInvalid(ValueError):
    """A workflow that cannot run, with every problem found in it."""

    def __init__(self, issues: list[Issue], source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{head}{len(issues)} problem(s) in the workflow:\n{lines}")
