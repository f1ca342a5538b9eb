"""Which installed packages differ from the versions the suite last passed with.

``constraints.txt`` records the exact versions of the last green run. A newer transformers or
diffusers can change numerics or APIs under the parity tests; when it does, the failure should
say "transformers 5.25 is untested here", not surface as a 1e-3 pixel difference three modules
deep. Packages named there but not installed (an extra left out) are not a mismatch.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"


def read_constraints(path: Path) -> dict[str, Requirement]:
    """The pins of a constraints file by canonical name; a malformed line names its number."""
    pins: dict[str, Requirement] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise ValueError(f"{path.name}:{number}: {error}") from None
        pins[canonicalize_name(requirement.name)] = requirement
    return pins


def untested_versions(path: Path = CONSTRAINTS) -> list[str]:
    """One line per installed package whose version the constraints file does not allow."""
    problems = []
    for name, requirement in sorted(read_constraints(path).items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        # ``==2.13.0`` admits the local build ``2.13.0+cpu`` (PEP 440 ignores the local label).
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{name} {installed} is installed; tested: {requirement}")
    return problems
