"""Requests the server cannot serve get a 4xx with a JSON error; only real bugs are 500s."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import aiohttp
import testnodes
from aiohttp import web
from test_app import GOOD, Running

from nodeflow import hookimpl
from nodeflow.plugins import load_catalog
from nodeflow.server.errors import is_input_error

DEEP = b'{"workflow": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


class RoutesPlugin:
    """Plugin routes standing for handler code the server does not control."""

    @staticmethod
    @hookimpl
    def nodeflow_routes(routes: Any) -> None:
        async def echo(request: web.Request) -> web.Response:
            return web.json_response(await request.json())

        async def long_name(request: web.Request) -> web.Response:
            raise OSError(errno.ENAMETOOLONG, "File name too long")

        async def bug(request: web.Request) -> web.Response:
            raise RuntimeError("a real bug")

        async def disk(request: web.Request) -> web.Response:
            raise OSError(errno.EIO, "Input/output error")

        routes.post("/echo", echo)
        routes.get("/long", long_name)
        routes.get("/bug", bug)
        routes.get("/disk", disk)


def test_input_errors_are_told_from_server_errors():
    assert is_input_error(RecursionError())
    assert is_input_error(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    assert is_input_error(OSError(errno.ENAMETOOLONG, "File name too long"))
    assert not is_input_error(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_input_error(RuntimeError("bug"))
    assert not is_input_error(ValueError("could be anything"))


def test_hostile_requests_get_4xx_json_and_the_server_keeps_serving(tmp_path, caplog):
    catalog = load_catalog(
        entry_points=False, plugins=[("testnodes", testnodes), ("probe", RoutesPlugin)]
    )
    assert not catalog.failures

    async def answer(srv: Running, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with srv.session.request(method, srv.base + path, **kwargs) as r:
            assert r.content_type == "application/json", (path, await r.text())
            return r.status, await r.json()

    async def scenario() -> None:
        async with Running(tmp_path, catalog) as srv:
            status, body = await answer(srv, "POST", "/api/runs", data=DEEP)
            assert status == 400 and body["errors"][0]["code"] == "json_syntax"
            assert "deep" in body["errors"][0]["message"]

            for kind in ["k" * 5000, "é" * 100, "a.b", "x-y"]:
                status, body = await answer(srv, "GET", f"/api/models/{kind}")
                assert status == 400 and "model kind" in body["error"]
            assert (await answer(srv, "GET", "/api/models/clip_vision"))[0] == 200

            status, body = await answer(srv, "GET", "/api/runs?limit=-1")
            assert status == 400 and "limit" in body["error"]

            status, body = await answer(srv, "GET", "/api/no/such/route")
            assert status == 404 and body["error"] == "Not Found: GET /api/no/such/route"
            async with srv.session.delete(srv.base + "/api/runs") as r:
                assert r.status == 405 and r.content_type == "application/json"
                assert "POST" in r.headers["Allow"] and "DELETE" in (await r.json())["error"]
            # what plugin code does with the body: not JSON, too deep to parse, not UTF-8
            for data in [b"[" * 100, DEEP, b'{"a": "\xff"}']:
                status, body = await answer(srv, "POST", "/api/plugins/probe/echo", data=data)
                assert status == 400 and body["error"].startswith("malformed request")

            assert (await answer(srv, "GET", "/api/plugins/probe/long"))[0] == 400
            with caplog.at_level(logging.ERROR, logger="nodeflow.server.errors"):
                for path in ["/api/plugins/probe/bug", "/api/plugins/probe/disk"]:
                    status, body = await answer(srv, "GET", path)
                    assert status == 500 and "internal" in body["error"]
            bugs = [r for r in caplog.records if r.name == "nodeflow.server.errors"]
            assert [r.exc_info[0] for r in bugs if r.exc_info] == [RuntimeError, OSError]

            status, body = await srv.submit(GOOD)
            assert status == 201
            assert (await srv.until_done(body["run_id"]))["status"] == "finished"

    asyncio.run(scenario())


def test_a_websocket_message_nested_too_deep_is_ignored_like_any_non_ping(tmp_path):
    async def scenario() -> None:
        async with (
            Running(tmp_path) as srv,
            srv.session.ws_connect(f"{srv.base}/api/ws") as ws,
        ):
            assert (await ws.receive_json())["type"] == "hello"
            await ws.send_str("[" * 60_000)
            await ws.send_str('{"type": "ping"}')
            message = await ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.TEXT and message.json() == {"type": "pong"}

    asyncio.run(scenario())
