"""Secure-by-default request checks for the nodeflow HTTP/websocket server.

Why this module exists: a generation server listening on localhost is reachable from every web
page the user opens. ComfyUI's CVE-2024-10481 showed what follows: any site could POST workflows
to ``http://127.0.0.1:8188`` from the user's browser, and the later bypasses showed that a
half-measure is not enough:

* ``Origin: null`` (sandboxed iframes, ``data:`` URLs, some redirects) slipped past checks that
  only rejected *known-foreign* origins, so we accept only an exact allow-list, never "not bad";
* DNS rebinding (``evil.example`` re-resolving to ``127.0.0.1``) makes the page *same-origin* with
  itself while talking to us, so the browser sends ``Host: evil.example:PORT`` and, for same-origin
  requests, often no Origin at all. Only checking the Host header defeats it;
* browsers send ``Origin`` on cross-origin ``fetch`` GETs and on *every* websocket upgrade, and
  websockets are not covered by CORS at all, so the Origin check applies to every method.

Install :func:`origin_middleware` before :func:`token_middleware` (``middlewares=[origin, token]``)
so a cross-site page is refused for what it is (403) before it can probe for the token (401).

The file helpers cover the other classic holes of such servers: path traversal when serving
outputs (:func:`contained_file`), stored XSS through uploaded or produced files served as HTML or
SVG (:func:`safe_content_type`), non-images and decompression bombs uploaded as "images"
(:func:`check_image_upload`), and hostile upload names (:func:`safe_upload_name`).

Tokens passed as ``?token=`` would appear in aiohttp's access log request line (and in the
Referer of requests from a page opened with one); ``nodeflow serve`` logs through
:class:`nodeflow.server.logs.AccessLogger`, which redacts them. Still, keep the token in the
``Authorization`` header wherever the client can set headers: proxies log URLs too.
"""

from __future__ import annotations

import hmac
import io
import re
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import unquote

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from PIL import Image, UnidentifiedImageError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Formats an upload may be. Each is a raster format PIL decodes itself; none can carry script.
UPLOAD_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")

#: Default pixel cap for uploads (64 megapixels, e.g. 8192x8192): far above any image a diffusion
#: model takes, far below what exhausts memory once decoded (64M px x 4 bytes = 256 MiB RGBA).
MAX_UPLOAD_PIXELS = 64 * 1024 * 1024

_MAX_UPLOAD_NAME = 100
_MAX_KEPT_SUFFIX = 16
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")

# Suffix -> content type for files we serve. Anything else is downloaded, never rendered: HTML,
# SVG (script-capable XML) and JavaScript must never come back with a type a browser executes.
_SERVED_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


def loopback_hosts(port: int) -> set[str]:
    """Host header values that mean this machine on ``port``.

    Why an explicit list: the Host check must accept exactly the names a local browser or client
    uses to reach us, and nothing a rebinding attacker's domain could produce. Port 80 is also
    accepted without ``:80`` because browsers and clients omit the default port.
    """
    names = ("127.0.0.1", "localhost", "[::1]")
    hosts = {f"{name}:{port}" for name in names}
    if port == 80:
        hosts.update(names)
    return hosts


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error body, so API clients and the web UI can show *why* a request was refused."""
    return web.json_response({"error": message}, status=status, headers=headers)


def origin_middleware(allowed_hosts: set[str]) -> Middleware:
    """Refuse requests whose Host is not ours or whose Origin is not exactly ours (403).

    Why Host: DNS rebinding makes a hostile page same-origin with itself while its name resolves
    to 127.0.0.1; the one thing it cannot forge is the ``Host: evil.example:PORT`` header the
    browser sends. Why Origin on every method: cross-origin GETs and websocket upgrades carry
    side effects too (a websocket is not covered by CORS). ``null``, other hosts or ports and
    malformed origins are refused; requests without Origin (curl, scripts, same-origin
    navigations) pass, since no browser omits it on a cross-origin request that matters.
    """
    hosts = frozenset(host.lower() for host in allowed_hosts)
    if not hosts:
        raise ValueError("allowed_hosts is empty: every request would be refused")
    origins = frozenset(f"{scheme}://{host}" for scheme in ("http", "https") for host in hosts)

    @web.middleware
    async def check_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        host_values = request.headers.getall(hdrs.HOST, [])
        if len(host_values) != 1 or host_values[0].lower() not in hosts:
            shown = ", ".join(host_values) or "(none)"
            return _refuse(
                403,
                f"Host {shown!r} refused: this server only answers to {sorted(hosts)} "
                "(a foreign Host means DNS rebinding or a misconfigured proxy)",
            )
        origin_values = request.headers.getall(hdrs.ORIGIN, [])
        if len(origin_values) > 1:
            return _refuse(403, "several Origin headers refused: a request has one origin")
        if origin_values and origin_values[0].lower() not in origins:
            return _refuse(
                403,
                f"Origin {origin_values[0]!r} refused: only pages served from this server "
                "may call it (cross-site, 'null' and malformed origins are refused)",
            )
        return await handler(request)

    return check_origin


def _as_bytes(text: str) -> bytes:
    """Encode for compare_digest, which refuses non-ASCII str; surrogatepass keeps it injective."""
    return text.encode("utf-8", "surrogatepass")


def token_middleware(token: str | None) -> Middleware:
    """Require the shared token on every request when one is configured (else pass everything).

    Why: on a non-loopback bind, Host/Origin checks only stop browsers; anyone on the network
    can send any header. The token comes as ``Authorization: Bearer <token>`` or, for websocket
    upgrades and ``<img src>`` URLs that cannot set headers, as a ``token`` query parameter.
    Compared with :func:`hmac.compare_digest` so response timing does not leak it.
    """
    if token is None:

        @web.middleware
        async def no_token(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await handler(request)

        return no_token
    if not token:
        raise ValueError("token is empty: use None to disable the token check")
    expected = _as_bytes(token)

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        presented: list[str] = []
        scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            presented.append(value.strip())
        presented.extend(request.query.getall("token", []))
        # Compare every candidate (no short-circuit) so timing does not tell which one matched.
        ok = False
        for candidate in presented:
            ok |= hmac.compare_digest(_as_bytes(candidate), expected)
        if not ok:
            what = "wrong token" if presented else "missing token"
            return _refuse(
                401,
                f"{what}: send 'Authorization: Bearer <token>' or a 'token' query parameter",
                headers={hdrs.WWW_AUTHENTICATE: "Bearer"},
            )
        return await handler(request)

    return check_token


class PathRefused(Exception):
    """A requested file path was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _decoded_forms(relative: str, rounds: int = 4) -> list[str]:
    """``relative`` plus its re-percent-decoded forms.

    Why: aiohttp already decoded the URL once; a proxy, a client or our own code may decode again,
    so ``%2e%2e`` must be judged as the ``..`` it can become.
    """
    forms = [relative]
    for _ in range(rounds):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def contained_file(folder: Path, relative: str) -> Path:
    """The existing regular file ``relative`` inside ``folder``, resolved, or :class:`PathRefused`.

    Why so strict: this is the only gate between a URL and the file system. Absolute paths, ``..``
    (also once percent-decoded again), backslashes (a separator on Windows, and never in names we
    write), NUL bytes and symlinks resolving outside ``folder`` are refused (403); missing files
    and directories are 404. The returned path is the resolved one, so serve that, not the input.
    Never raises anything but :class:`PathRefused`.
    """
    try:
        return _contained_file(folder, relative)
    except PathRefused:
        raise
    except (OSError, ValueError, RuntimeError, TypeError) as exc:  # odd names, loops, bad types
        raise PathRefused(404, "file not found") from exc


def _contained_file(folder: Path, relative: str) -> Path:
    if not isinstance(relative, str):
        raise PathRefused(403, "path must be a string")
    for form in _decoded_forms(relative):
        if "\x00" in form:
            raise PathRefused(403, "NUL byte in path refused")
        if "\\" in form:
            raise PathRefused(403, "backslash in path refused")
        posix, windows = PurePosixPath(form), PureWindowsPath(form)
        if posix.is_absolute() or windows.drive or windows.root:
            raise PathRefused(403, "absolute path refused")
        if ".." in posix.parts:
            raise PathRefused(403, "'..' in path refused")
    base = Path(folder).resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise PathRefused(403, "path leads outside the served folder")
    if not target.is_file():
        raise PathRefused(404, "file not found")
    return target


def safe_content_type(path: Path) -> tuple[str, dict[str, str]]:
    """``(content type, extra headers)`` for serving a produced or uploaded file.

    Why: a file we serve from our own origin runs with our origin's rights if a browser renders it
    as HTML, SVG or script, so only inert types are named and everything else is a download.
    ``nosniff`` stops the browser from guessing HTML anyway, and the sandboxing CSP neuters the
    file even if it is opened directly.
    """
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    content_type = _SERVED_TYPES.get(Path(path).suffix.lower())
    if content_type is None:
        name = safe_upload_name(Path(path).name)
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
        content_type = "application/octet-stream"
    return content_type, headers


class UploadRefused(Exception):
    """An upload was refused; ``status`` is 413 (too large), 415 (not an image) or 400."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_image_upload(data: bytes, max_bytes: int, max_pixels: int = MAX_UPLOAD_PIXELS) -> str:
    """The format (``'PNG'``, ``'JPEG'``, ``'WEBP'`` or ``'GIF'``) of an uploaded image.

    Why decode fully: a file name or magic bytes prove nothing (an SVG or HTML file renamed
    ``.png`` would be stored and later served), so the bytes are decoded with PIL, restricted to
    raster formats. Why a pixel cap checked *before* decoding: a few KiB of PNG can declare
    20000x20000 pixels and expand to gigabytes (decompression bomb). Only the first frame of an
    animated GIF/WEBP is decoded.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UploadRefused(400, "upload body must be bytes")
    if len(data) > max_bytes:
        raise UploadRefused(413, f"upload is {len(data)} bytes, the limit is {max_bytes}")
    if not data:
        raise UploadRefused(400, "upload is empty")
    try:
        with Image.open(io.BytesIO(bytes(data)), formats=list(UPLOAD_FORMATS)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UploadRefused(
                    413, f"image is {width}x{height} pixels, the limit is {max_pixels} pixels"
                )
            image.load()
            image_format = image.format
    except UploadRefused:
        raise
    except Image.DecompressionBombError as exc:
        raise UploadRefused(413, f"image declares too many pixels: {exc}") from exc
    except MemoryError as exc:
        raise UploadRefused(413, "image too large to decode") from exc
    except UnidentifiedImageError as exc:
        allowed = ", ".join(UPLOAD_FORMATS)
        raise UploadRefused(415, f"not a {allowed} image") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... on corrupt data
        raise UploadRefused(415, f"image could not be decoded: {exc}") from exc
    if image_format not in UPLOAD_FORMATS:
        raise UploadRefused(415, f"image format {image_format!r} is not accepted")
    return image_format


def safe_upload_name(filename: str) -> str:
    """A file name safe to store an upload under, keeping its extension.

    Why: the client-sent name may carry directories (``../../x``, ``C:\\x``), hidden-file dots,
    shell or HTML metacharacters, or be huge. Only the basename survives, every character outside
    ``[A-Za-z0-9._-]`` becomes ``_``, leading dots go, an empty result becomes ``upload``, and
    long names are cut to 100 characters with the extension kept.
    """
    base = re.split(r"[/\\]", filename)[-1]
    name = _UNSAFE_NAME_CHARS.sub("_", base).lstrip(".")
    if not name.strip("_"):
        name = "upload"
    if len(name) > _MAX_UPLOAD_NAME:
        stem, dot, suffix = name.rpartition(".")
        keep = dot + suffix if stem and len(suffix) < _MAX_KEPT_SUFFIX else ""
        name = name[: _MAX_UPLOAD_NAME - len(keep)] + keep
    return name
