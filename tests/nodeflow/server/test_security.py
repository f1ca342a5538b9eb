"""Tests for nodeflow.server.security: real HTTP on loopback for the middlewares, unit tests else.

The middleware tests send forged Host and Origin headers from an aiohttp client, which is what a
browser does in the attacks they guard against (cross-site requests, ``Origin: null`` from
sandboxed frames, DNS rebinding), so the server sees exactly the headers it would in the wild.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from nodeflow.server.security import (
    PathRefused,
    UploadRefused,
    check_image_upload,
    contained_file,
    loopback_hosts,
    origin_middleware,
    safe_content_type,
    safe_upload_name,
    token_middleware,
)

TOKEN = "s3cret-token-value"


# --- a tiny app on a real loopback socket ---------------------------------------------------


async def _hello(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str("hello")
    await ws.close()
    return ws


@asynccontextmanager
async def serve(token: str | None = None) -> AsyncIterator[tuple[str, int]]:
    """Run the app on 127.0.0.1; yields (base URL, port).

    The socket is bound first so the port is known when the middlewares are built (they need it
    for the allowed Host values) without the race of probing for a free port.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = web.Application(
        middlewares=[origin_middleware(loopback_hosts(port)), token_middleware(token)]
    )
    app.router.add_get("/hello", _hello)
    app.router.add_post("/hello", _hello)
    app.router.add_get("/ws", _ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        await runner.cleanup()


async def _status(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


def _free_other_port(port: int) -> int:
    return port + 1 if port < 65535 else port - 1


# --- loopback_hosts ---------------------------------------------------------------------------


def test_loopback_hosts() -> None:
    assert loopback_hosts(8188) == {"127.0.0.1:8188", "localhost:8188", "[::1]:8188"}
    assert loopback_hosts(80) == {
        "127.0.0.1:80",
        "localhost:80",
        "[::1]:80",
        "127.0.0.1",
        "localhost",
        "[::1]",
    }


def test_origin_middleware_refuses_empty_allow_list() -> None:
    with pytest.raises(ValueError):
        origin_middleware(set())


# --- Host -------------------------------------------------------------------------------------


def test_host_check_over_http() -> None:
    async def main() -> None:
        async with serve() as (base, port):
            for host in (f"127.0.0.1:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
                status, _ = await _status(f"{base}/hello", {"Host": host})
                assert status == 200, host
            status, body = await _status(f"{base}/hello", {"Host": f"evil.example:{port}"})
            assert status == 403
            assert "evil.example" in body["error"] and "rebinding" in body["error"]
            other = _free_other_port(port)
            status, _ = await _status(f"{base}/hello", {"Host": f"127.0.0.1:{other}"})
            assert status == 403
            status, _ = await _status(f"{base}/hello", {"Host": "127.0.0.1"})
            assert status == 403

    asyncio.run(main())


# --- Origin -----------------------------------------------------------------------------------


def test_origin_check_over_http() -> None:
    async def main() -> None:
        async with serve() as (base, port):
            assert (await _status(f"{base}/hello"))[0] == 200  # no Origin: curl, scripts
            for origin in (f"http://127.0.0.1:{port}", f"https://localhost:{port}"):
                for method in ("GET", "POST"):
                    status, _ = await _status(f"{base}/hello", {"Origin": origin}, method)
                    assert status == 200, (origin, method)
            other = _free_other_port(port)
            refused = [
                "http://evil.example",
                f"http://evil.example:{port}",
                "null",
                f"http://127.0.0.1:{other}",
                f"http://127.0.0.1:{port}/",
                f"ftp://127.0.0.1:{port}",
                "not a url",
                "",
            ]
            for origin in refused:
                for method in ("GET", "POST"):
                    status, body = await _status(f"{base}/hello", {"Origin": origin}, method)
                    assert status == 403, (origin, method)
                    assert "Origin" in body["error"]

    asyncio.run(main())


def test_websocket_upgrade_origin() -> None:
    async def main() -> None:
        async with serve() as (base, port), aiohttp.ClientSession() as session:
            for origin in ("http://evil.example", "null"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(f"{base}/ws", headers={"Origin": origin})
                assert info.value.status == 403
            good = {"Origin": f"http://127.0.0.1:{port}"}
            async with session.ws_connect(f"{base}/ws", headers=good) as ws:
                assert await ws.receive_str() == "hello"

    asyncio.run(main())


# --- token ------------------------------------------------------------------------------------


def test_token_none_passes_everything() -> None:
    async def main() -> None:
        async with serve(token=None) as (base, _):
            assert (await _status(f"{base}/hello"))[0] == 200
            assert (await _status(f"{base}/hello?token=whatever"))[0] == 200

    asyncio.run(main())


def test_token_required_when_set() -> None:
    async def main() -> None:
        async with serve(token=TOKEN) as (base, port):
            status, body = await _status(f"{base}/hello")
            assert status == 401 and "missing" in body["error"]
            for headers in (
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": "Bearer \u00e9t\u00e9"},
            ):
                status, body = await _status(f"{base}/hello", headers)
                assert status == 401, headers
            assert (await _status(f"{base}/hello?token=wrong"))[0] == 401
            status, _ = await _status(f"{base}/hello", {"Authorization": f"Bearer {TOKEN}"})
            assert status == 200
            status, _ = await _status(f"{base}/hello", {"Authorization": f"bearer {TOKEN}"})
            assert status == 200
            assert (await _status(f"{base}/hello?token={TOKEN}"))[0] == 200
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(f"{base}/ws")
                assert info.value.status == 401
                origin = {"Origin": f"http://localhost:{port}"}
                async with session.ws_connect(f"{base}/ws?token={TOKEN}", headers=origin) as ws:
                    assert await ws.receive_str() == "hello"
                # A foreign page is refused for what it is (403) before any token probing.
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(
                        f"{base}/ws?token={TOKEN}", headers={"Origin": "http://evil.example"}
                    )
                assert info.value.status == 403

    asyncio.run(main())


def test_empty_token_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        token_middleware("")


# --- contained_file ---------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A served folder with a file, a subfolder, and a secret right next to it."""
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "img.png").write_bytes(b"png")
    (folder / "sub" / "deep.png").write_bytes(b"deep")
    (tmp_path / "secret").write_text("secret")
    os.symlink(tmp_path / "secret", folder / "escape")
    os.symlink(tmp_path, folder / "escape_dir")
    os.symlink(folder / "img.png", folder / "alias.png")
    os.symlink(folder / "loop", folder / "loop")
    return folder


def test_contained_file_ok(served: Path) -> None:
    assert contained_file(served, "img.png") == (served / "img.png").resolve()
    assert contained_file(served, "sub/deep.png") == (served / "sub" / "deep.png").resolve()
    assert contained_file(served, "./sub/deep.png").read_bytes() == b"deep"
    assert contained_file(served, "alias.png") == (served / "img.png").resolve()


@pytest.mark.parametrize(
    "relative",
    [
        "../secret",
        "a/../../secret",
        "sub/../img.png",  # harmless here, but '..' is refused outright
        "%2e%2e/secret",
        "%2E%2E/secret",
        "..%2fsecret",
        "%252e%252e/secret",  # double-encoded
        "/etc/passwd",
        "%2fetc/passwd",
        "sub\\..\\..\\x",
        "sub\\deep.png",
        "C:/Windows/win.ini",
        "img.png\x00.txt",
        "img.png%00",
        "escape",
        "escape_dir/secret",
    ],
)
def test_contained_file_refused(served: Path, relative: str) -> None:
    with pytest.raises(PathRefused) as info:
        contained_file(served, relative)
    assert info.value.status == 403


@pytest.mark.parametrize("relative", ["missing.png", "sub", "", ".", "loop", "x" * 5000])
def test_contained_file_not_found(served: Path, relative: str) -> None:
    with pytest.raises(PathRefused) as info:
        contained_file(served, relative)
    assert info.value.status == 404


def test_contained_file_only_raises_path_refused(served: Path) -> None:
    with pytest.raises(PathRefused):
        contained_file(served, None)  # type: ignore[arg-type]
    with pytest.raises(PathRefused) as info:
        contained_file(served.parent / "no-such-folder", "img.png")
    assert info.value.status == 404


# --- safe_content_type ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", "image/png"),
        ("a.PNG", "image/png"),
        ("a.jpg", "image/jpeg"),
        ("a.jpeg", "image/jpeg"),
        ("a.webp", "image/webp"),
        ("a.gif", "image/gif"),
        ("a.json", "application/json"),
        ("a.txt", "text/plain; charset=utf-8"),
    ],
)
def test_safe_content_type_inert_types(name: str, expected: str) -> None:
    content_type, headers = safe_content_type(Path(name))
    assert content_type == expected
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert "Content-Disposition" not in headers


@pytest.mark.parametrize(
    "name", ["a.html", "a.htm", "a.svg", "a.js", "a.mjs", "a.xhtml", "a.xml", "noext", 'x.p"ng']
)
def test_safe_content_type_downloads_everything_else(name: str) -> None:
    content_type, headers = safe_content_type(Path(name))
    assert content_type == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment")
    assert '"' not in headers["Content-Disposition"].removeprefix('attachment; filename="')[:-1]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


# --- check_image_upload -----------------------------------------------------------------------


def _encoded(fmt: str, size: tuple[int, int] = (32, 24), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 30, 90) if mode == "RGB" else 0).save(buffer, format=fmt)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` in IHDR with a tiny IDAT: the cheap bomb shape."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_check_image_upload_accepts_real_images(fmt: str) -> None:
    assert check_image_upload(_encoded(fmt), max_bytes=1 << 20) == fmt


def test_check_image_upload_too_many_bytes() -> None:
    data = _encoded("PNG")
    assert check_image_upload(data, max_bytes=len(data)) == "PNG"
    with pytest.raises(UploadRefused) as info:
        check_image_upload(data, max_bytes=len(data) - 1)
    assert info.value.status == 413


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b"<!doctype html><html><script>alert(document.cookie)</script></html>",
        b"GIF89a<script>alert(1)</script>",  # polyglot-looking header, not a real GIF
        b"\x89PNG\r\n\x1a\n<html>",
        _encoded("BMP"),  # a real image, but not an accepted format
        _encoded("TIFF"),
    ],
)
def test_check_image_upload_refuses_non_images(data: bytes) -> None:
    with pytest.raises(UploadRefused) as info:
        check_image_upload(data, max_bytes=1 << 20)
    assert info.value.status == 415


def test_check_image_upload_refuses_truncated_png() -> None:
    data = _encoded("PNG", size=(256, 256))
    # Noise so the image data is long enough to cut in the middle of IDAT.
    noisy = io.BytesIO()
    Image.frombytes("L", (256, 256), os.urandom(256 * 256)).save(noisy, format="PNG")
    for broken in (data[: len(data) // 2], noisy.getvalue()[: len(noisy.getvalue()) // 2]):
        with pytest.raises(UploadRefused) as info:
            check_image_upload(broken, max_bytes=1 << 20)
        assert info.value.status in (400, 415)


def test_check_image_upload_refuses_empty() -> None:
    with pytest.raises(UploadRefused) as info:
        check_image_upload(b"", max_bytes=100)
    assert info.value.status == 400


def test_check_image_upload_refuses_declared_bomb() -> None:
    bomb = _png_header_only(20000, 20000)
    assert len(bomb) < 200
    with pytest.raises(UploadRefused) as info:
        check_image_upload(bomb, max_bytes=1 << 20)
    assert info.value.status == 413
    # Under PIL's own bomb threshold but over our 64-megapixel cap: refused before decoding.
    with pytest.raises(UploadRefused) as info:
        check_image_upload(_png_header_only(9000, 9000), max_bytes=1 << 20)
    assert info.value.status == 413


def test_check_image_upload_pixel_cap_on_a_real_image() -> None:
    data = _encoded("PNG", size=(100, 100))
    assert check_image_upload(data, max_bytes=1 << 20, max_pixels=100 * 100) == "PNG"
    with pytest.raises(UploadRefused) as info:
        check_image_upload(data, max_bytes=1 << 20, max_pixels=100 * 100 - 1)
    assert info.value.status == 413


# --- safe_upload_name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("cat.png", "cat.png"),
        ("My Photo (1).JPG", "My_Photo__1_.JPG"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\evil.png", "evil.png"),
        ("dir/sub/ok-name_1.webp", "ok-name_1.webp"),
        (".htaccess", "htaccess"),
        ("...hidden.png", "hidden.png"),
        ("..", "upload"),
        ("", "upload"),
        ("/", "upload"),
        ("фото", "upload"),
        ("фото.png", "____.png"),
        ("a\x00b.png", "a_b.png"),
        ("<img onerror=x>.png", "_img_onerror_x_.png"),
    ],
)
def test_safe_upload_name(filename: str, expected: str) -> None:
    assert safe_upload_name(filename) == expected


def test_safe_upload_name_long_keeps_extension() -> None:
    name = safe_upload_name("a" * 300 + ".png")
    assert len(name) == 100 and name.endswith(".png") and name.startswith("aaa")
    no_ext = safe_upload_name("b" * 300)
    assert no_ext == "b" * 100
    huge_ext = safe_upload_name("c." + "d" * 300)
    assert len(huge_ext) == 100


def test_safe_upload_name_is_always_safe() -> None:
    pattern = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
    for raw in ["", ".", "..", "./.", "a/..", " ", "\\", "é" * 500, ".." * 80 + "x", "%2e%2e"]:
        assert pattern.fullmatch(safe_upload_name(raw)), raw
