"""Suite-wide settings: nothing may reach a model hub, and only tested versions run the suite."""

import os

import pytest
from versions import CONSTRAINTS, untested_versions

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ALLOW_UNTESTED = "NODEFLOW_ALLOW_UNTESTED_VERSIONS"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop before the first test when the installed versions are not the tested ones."""
    problems = untested_versions()
    if not problems:
        return
    listing = "\n  ".join(problems)
    if os.environ.get(ALLOW_UNTESTED) == "1":
        session.config.issue_config_time_warning(
            pytest.PytestWarning(f"untested versions ({ALLOW_UNTESTED}=1):\n  {listing}"),
            stacklevel=2,
        )
        return
    pytest.exit(
        f"these installed versions differ from {CONSTRAINTS.name}, which the suite last passed "
        f"with:\n  {listing}\nInstall the tested ones: pip install -c constraints.txt "
        f'torch==2.13.0 -e ".[dev]" (see README), or set {ALLOW_UNTESTED}=1 to run anyway.',
        returncode=4,
    )
