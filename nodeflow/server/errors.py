"""Every error the server answers is JSON ``{"error": ...}``, and bad input is never a 500.

Why a middleware: handlers validate what they expect, but hostile or broken clients find the
paths nobody thought of: JSON nested 100,000 deep (``RecursionError`` in the parser), bytes that
are not UTF-8, a path segment longer than the file system allows (``OSError: File name too
long``). Each is the client's fault, so it gets a 400 the client can read, not a 500 that says
the server is broken and a traceback in the log that sends someone hunting for a bug. Anything
else that escapes a handler *is* a bug: it stays a 500 (with a JSON body) and is logged with its
traceback.

aiohttp's own refusals (404 unknown route, 405 wrong method, 413 body too large) come as
exceptions with a text body; they are answered as JSON too, keeping their status and headers
(``Allow`` on a 405), so API clients can always parse what they get.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Exceptions only bad input raises (see :func:`is_input_error`).
_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    RecursionError,  # nesting deeper than the parser or validator recurses
    UnicodeError,  # bytes or escapes that are not text
    json.JSONDecodeError,  # a body that is not JSON (plugin routes calling request.json())
)
#: OSError numbers a request's own path can cause, not the server's state.
_INPUT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})
_SHOWN = 200
_BODY_HEADERS = frozenset({"content-type", "content-length"})


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The server's error shape: ``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status, headers=headers)


def is_input_error(exc: BaseException) -> bool:
    """Whether ``exc`` can only have come from what the client sent, never from a server bug."""
    if isinstance(exc, OSError):
        return exc.errno in _INPUT_ERRNOS
    return isinstance(exc, _INPUT_ERRORS)


def error_middleware() -> Middleware:
    """Answer HTTP exceptions as JSON, bad input as 400 and bugs as a logged 500.

    Install it first (outermost), so it also covers the other middlewares and the router.
    """

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # redirects and the like are answers, not errors
            return _from_http_exception(request, exc)
        except Exception as exc:
            # the path, never the query: a query may carry the auth token
            where = f"{request.method} {_clip(request.path)}"
            if is_input_error(exc):
                log.info("refused %s: %s: %s", where, type(exc).__name__, _clip(str(exc)))
                return json_error(400, f"malformed request: {type(exc).__name__}")
            log.exception("error handling %s", where)
            return json_error(500, "internal server error (the server log has the details)")

    return json_errors


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    default = f"{exc.status}: {exc.reason}"
    if exc.text and exc.text != default:
        message = exc.text
    else:
        message = f"{exc.reason}: {request.method} {_clip(request.path)}"
    kept = {name: value for name, value in exc.headers.items() if name.lower() not in _BODY_HEADERS}
    return json_error(exc.status, message, headers=kept)


def _clip(text: str) -> str:
    """Long enough to recognise, short enough that a hostile request cannot flood the log."""
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
