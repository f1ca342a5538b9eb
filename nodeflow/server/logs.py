"""What ``nodeflow serve`` writes to its terminal: INFO lines, and access lines without secrets.

Why configure logging at all: the server logs through :mod:`logging` (run events, refused
requests, aiohttp's access log), and an unconfigured process shows only WARNING and above, so
a user watching the terminal saw nothing happen. :func:`configure` sends INFO to stderr, unless
the embedding application configured logging itself.

Why our own access logger: aiohttp's logs the request line as sent, and its default format also
the ``Referer``. A token given as ``?token=...`` (websockets and ``<img src>`` cannot send headers)
would land in both: the request line of every websocket and image request, and the Referer of
every request an editor opened at ``/?token=...`` makes. Log files get pasted into bug reports,
so the token's value is replaced with ``***`` wherever the query names it, however the name is
percent-encoded (the server accepts ``%74oken=`` as ``token=``, so the log must hide it too).
"""

from __future__ import annotations

import logging
import sys
from urllib.parse import unquote_plus

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

#: Query parameters whose values are never logged.
SECRET_PARAMETERS = frozenset({"token"})
REDACTED = "***"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact(target: str) -> str:
    """``target`` (a request target: path and query) with secret query values replaced."""
    path, question, query = target.partition("?")
    if not question:
        return target
    query, hash_, fragment = query.partition("#")
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        if equals and unquote_plus(name).strip() in SECRET_PARAMETERS:
            part = f"{name}={REDACTED}"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}{hash_}{fragment}"


class AccessLogger(AbstractAccessLogger):
    """One INFO line per request: client, request line (redacted), status, bytes, seconds.

    No Referer and no User-Agent: the first can carry the token, the second is noise on a
    local server.
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        remote = request.remote or "-"
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        self.logger.info(
            '%s "%s %s %s" %d %d %.3fs',
            remote,
            request.method,
            redact(request.raw_path),
            version,
            response.status,
            response.body_length,
            time,
        )


def configure(level: int = logging.INFO) -> None:
    """Send log records of ``level`` and above to stderr, as a server's terminal expects.

    Does nothing when the root logger already has handlers (an application embedding the server,
    or a test harness, decided where logs go).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
