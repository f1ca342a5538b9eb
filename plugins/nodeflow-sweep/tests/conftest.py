"""Keep the demo model these tests make out of the user's home folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def nodeflow_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("sweep-home")
    previous = os.environ.get("NODEFLOW_HOME")
    os.environ["NODEFLOW_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("NODEFLOW_HOME", None)
    else:
        os.environ["NODEFLOW_HOME"] = previous
