"""What plugins add to the server (routes, editor extensions) and how their failures show."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import test_app
from aiohttp import web

from nodeflow.plugins import Catalog, load_catalog

ROUTES = """
from aiohttp import web
from nodeflow import hookimpl, node

@node("Ping", output_node=True)
def ping(text: str = "pong") -> dict:
    "Report a word."
    return {"text": text}

async def hello(request):
    return web.json_response({"hello": request.match_info.get("who", "world")})

@hookimpl
def nodeflow_nodes():
    return [ping]

@hookimpl
def nodeflow_routes(routes, context):
    routes.get("/hello", hello)
    routes.get("/hello/{who}", hello)

    async def count(request):
        return web.json_response({"nodes": len(context.catalog.nodes), "plugin": context.plugin})

    routes.add("get", "/count", count)
"""

BAD_ROUTES = """
from aiohttp import web
from nodeflow import hookimpl

async def hello(request):
    return web.json_response({"bad": True})

@hookimpl
def nodeflow_routes(routes):
    routes.get("/early", hello)  # added before the raise: must not be served
    raise RuntimeError("routes exploded")
"""

EXTENSION = """
from pathlib import Path
from nodeflow import hookimpl
from nodeflow.extensions import WebExtension

STATIC = Path(__file__).parent / "paint_static"

@hookimpl
def nodeflow_web_extensions():
    return WebExtension(static=STATIC, scripts=("paint.js",), styles=("paint.css",))
"""


class Running(test_app.Running):
    """A real server on loopback for ``catalog``; ``get`` returns (status, headers, body)."""

    def __init__(self, catalog: Catalog, tmp: Path) -> None:
        super().__init__(tmp, catalog)

    async def get(self, path: str) -> tuple[int, Any, Any]:
        async with self.session.get(self.base + path) as r:
            is_json = r.content_type == "application/json"
            return r.status, r.headers, await (r.json() if is_json else r.text())


def test_nodeflow_routes_are_added_under_the_plugin_prefix_and_a_raising_one_adds_none(
    install_plugin, tmp_path
):
    install_plugin("routed-pack", "routed_pack", ROUTES, entry_name="routed")
    install_plugin("badroutes-pack", "badroutes_pack", BAD_ROUTES, entry_name="badroutes")
    catalog = load_catalog()

    async def scenario() -> None:
        async with Running(catalog, tmp_path) as server:
            status, _, body = await server.get("/api/plugins/routed/hello")
            assert (status, body) == (200, {"hello": "world"})
            assert (await server.get("/api/plugins/routed/hello/ada"))[2] == {"hello": "ada"}
            _, _, body = await server.get("/api/plugins/routed/count")
            assert body == {"nodes": len(catalog.nodes), "plugin": "routed"}
            assert (await server.get("/hello"))[0] == 404  # nothing outside the prefix
            assert (await server.get("/api/plugins/badroutes/early"))[0] == 404
            status, _, system = await server.get("/api/system")
            failed = {f["plugin"]: f for f in system["failed_plugins"]}
            assert failed["badroutes"]["stage"] == "nodeflow_routes"
            assert "routes exploded" in failed["badroutes"]["error"]
            status, _, nodes = await server.get("/api/nodes")  # the rest of the server works
            assert status == 200 and "routed.Ping" in nodes and "TextEncode" in nodes

    asyncio.run(scenario())


def test_plugin_routes_refuse_paths_that_escape_the_prefix():
    import pytest

    from nodeflow.server.plugins import PluginRoutes

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    routes = PluginRoutes("p")
    assert routes.get("x/{id}", handler) == "/api/plugins/p/x/{id}"
    for bad in ("/../api/runs", "/a?b", "/a b"):
        with pytest.raises(ValueError):
            routes.get(bad, handler)
    with pytest.raises(ValueError):
        routes.add("TRACE", "/x", handler)


def test_nodeflow_web_extensions_are_listed_and_served(install_plugin, tmp_path):
    install_plugin("paint-pack", "paint_pack", EXTENSION, entry_name="paint")
    static = tmp_path / "site" / "paint_static"
    (static / "sub").mkdir(parents=True)
    (static / "paint.js").write_text("export default {};\n")
    (static / "paint.css").write_text(".paint {}\n")
    (static / "sub" / "page.html").write_text("<script>alert(1)</script>")
    (tmp_path / "secret.js").write_text("secret")
    catalog = load_catalog()
    assert [e.plugin for e in catalog.web_extensions if e.plugin == "paint"] == ["paint"]

    async def scenario() -> None:
        async with Running(catalog, tmp_path) as server:
            _, _, listing = await server.get("/api/extensions")
            (paint,) = [e for e in listing["extensions"] if e["plugin"] == "paint"]
            assert paint["scripts"] == ["/extensions/paint/paint.js"]
            assert paint["styles"] == ["/extensions/paint/paint.css"]
            status, headers, body = await server.get("/extensions/paint/paint.js")
            assert status == 200 and body == "export default {};\n"
            assert headers["Content-Type"].startswith("text/javascript")
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert (await server.get("/extensions/paint/sub/page.html"))[0] == 404  # not HTML
            assert (await server.get("/extensions/paint/%2e%2e/%2e%2e/secret.js"))[0] in (403, 404)
            assert (await server.get("/extensions/nobody/paint.js"))[0] == 404

    asyncio.run(scenario())


def test_a_web_extension_with_a_missing_script_is_a_failure(install_plugin, tmp_path):
    install_plugin("paint-pack", "paint_pack", EXTENSION, entry_name="paint")
    (tmp_path / "site" / "paint_static").mkdir()
    catalog = load_catalog()
    (failure,) = [f for f in catalog.failures if f.plugin == "paint"]
    assert failure.stage == "nodeflow_web_extensions" and "paint.js" in failure.error
    assert not [e for e in catalog.web_extensions if e.plugin == "paint"]


def test_a_plugin_raising_on_import_leaves_the_server_working_and_is_reported(
    install_plugin, tmp_path
):
    install_plugin("broken-pack", "broken_pack", "raise ImportError('no gpu lib')\n", "broken")
    install_plugin("routed-pack", "routed_pack", ROUTES, entry_name="routed")
    catalog = load_catalog()

    async def scenario() -> None:
        async with Running(catalog, tmp_path) as server:
            _, _, system = await server.get("/api/system")
            (failure,) = [f for f in system["failed_plugins"] if f["plugin"] == "broken"]
            assert failure["stage"] == "import" and "no gpu lib" in failure["error"]
            assert failure["distribution"] == "broken-pack"
            assert {"nodes", "routed"} <= {p["name"] for p in system["plugins"]}
            assert system["versions"]["plugin_api"] == 1
            assert (await server.get("/api/plugins/routed/hello"))[0] == 200
            async with server.session.post(
                server.base + "/api/runs",
                json={"workflow": {"version": 1, "nodes": {"p": {"type": "routed.Ping"}}}},
            ) as r:
                assert r.status == 201
                run_id = (await r.json())["run_id"]
            for _ in range(500):
                _, _, run = await server.get(f"/api/runs/{run_id}")
                if run["status"] == "finished":
                    break
                await asyncio.sleep(0.02)
            assert run["outputs"] == {"p": {"text": "pong"}}
            # stored with provenance: which distribution provides routed.*
            assert run["workflow"]["requires"] == {
                "routed": {"distribution": "routed-pack", "version": "1.0"}
            }

    asyncio.run(scenario())
