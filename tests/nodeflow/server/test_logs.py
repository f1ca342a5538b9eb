"""The access log never shows a token, and ``nodeflow serve`` logging shows INFO lines."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from nodeflow.server import logs


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("/api/ws", "/api/ws"),
        ("/api/ws?token=abc", "/api/ws?token=***"),
        ("/api/files/output/a.png?x=1&token=abc&y=2", "/api/files/output/a.png?x=1&token=***&y=2"),
        ("/?token=a&token=b", "/?token=***&token=***"),
        ("/?%74oken=abc", "/?%74oken=***"),  # the server decodes the name, so must the log
        ("/?%74%6F%6B%65%6E=abc", "/?%74%6F%6B%65%6E=***"),
        ("/?tokens=abc&mytoken=def", "/?tokens=abc&mytoken=def"),  # other names are kept
        ("/?token", "/?token"),  # nothing to hide
        ("/?token=", "/?token=***"),
    ],
)
def test_redact_hides_every_spelling_of_the_token(target, shown):
    assert logs.redact(target) == shown


def test_the_access_logger_writes_one_redacted_info_line_without_the_referer(caplog):
    logger = logging.getLogger("test.access")
    request = make_mocked_request(
        "GET",
        "/api/ws?token=s3cret",
        headers={"Referer": "http://127.0.0.1:8188/?token=s3cret", "User-Agent": "x"},
    )
    with caplog.at_level(logging.INFO, logger="test.access"):
        logs.AccessLogger(logger, "").log(request, web.Response(status=101), 0.25)
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "s3cret" not in record.getMessage()
    assert '"GET /api/ws?token=*** HTTP/1.1" 101' in record.getMessage()
    assert record.getMessage().endswith("0.250s")


def test_configure_leaves_an_embedding_application_s_logging_alone(monkeypatch):
    root = logging.getLogger()
    level = root.level
    monkeypatch.setattr(root, "handlers", [])  # a process nobody configured logging in
    try:
        logs.configure()
        assert len(root.handlers) == 1 and root.level == logging.INFO
        root.setLevel(logging.WARNING)
        logs.configure()  # already configured: nothing changes
        assert len(root.handlers) == 1 and root.level == logging.WARNING
    finally:
        root.setLevel(level)  # setLevel, not setattr: it also resets the loggers' level caches
