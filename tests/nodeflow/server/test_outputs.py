"""Pictures in run records and node.finished events carry a ready, correctly quoted ``url``."""

from __future__ import annotations

import asyncio
from typing import Any

import testnodes
from test_app import GOOD, Running, events_until_finished, yarl_url

from nodeflow import Context, hookimpl, node
from nodeflow.plugins import load_catalog
from nodeflow.server.outputs import image_url, outputs_with_urls, report_with_urls

PNG = b"\x89PNG\r\n\x1a\n not really, but served as written"
NAME = "a b#1?%.png"  # every character here means something else in a URL
SUBFOLDER = "my pics/2024"


@node("SavePicture", category="test", output_node=True)
def save_picture(ctx: Context, name: str = NAME, subfolder: str = SUBFOLDER) -> dict:
    """Write a file into the output folder and report it as SaveImage does."""
    folder = ctx.env.output_dir / subfolder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(PNG)
    return {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}]}


class PicturePlugin:
    @staticmethod
    @hookimpl
    def nodeflow_nodes() -> list[Any]:
        return [save_picture]


def test_image_url_quotes_each_part_and_knows_the_folders():
    assert image_url({"filename": "x.png", "subfolder": ".", "type": "output"}) == (
        "/api/files/output/x.png"
    )
    assert image_url({"filename": "x.png", "subfolder": "", "type": "output"}) == (
        "/api/files/output/x.png"
    )
    assert image_url({"filename": "p_00001.png", "subfolder": "previews", "type": "preview"}) == (
        "/api/files/output/previews/p_00001.png"
    )
    assert image_url({"filename": NAME, "subfolder": SUBFOLDER, "type": "output"}) == (
        "/api/files/output/my%20pics/2024/a%20b%231%3F%25.png"
    )
    assert image_url({"filename": "up.png", "subfolder": ".", "type": "input"}) == (
        "/api/files/input/up.png"
    )
    assert image_url({"filename": "t.png", "subfolder": "", "type": "temp"}) is None  # where?
    assert image_url({"filename": 3, "subfolder": "", "type": "output"}) is None


def test_reports_that_are_not_picture_lists_pass_through_unchanged():
    odd: dict[str, Any] = {"value": 6.0, "images": "not a list"}
    assert report_with_urls(odd) is odd
    assert report_with_urls(None) is None
    mixed = {"images": ["x", {"filename": "a.png", "subfolder": ".", "type": "output"}]}
    assert report_with_urls(mixed)["images"] == [
        "x",
        {"filename": "a.png", "subfolder": ".", "type": "output", "url": "/api/files/output/a.png"},
    ]
    assert "url" not in mixed["images"][1]  # a copy: the stored record is left as reported
    assert outputs_with_urls({"o": {"value": 6.0}}) == {"o": {"value": 6.0}}


def test_run_records_history_and_events_carry_a_url_that_serves_the_picture(tmp_path):
    catalog = load_catalog(
        entry_points=False, plugins=[("testnodes", testnodes), ("pictures", PicturePlugin)]
    )
    assert not catalog.failures
    workflow = {"version": 1, "nodes": {"save": {"type": "SavePicture"}}}
    expected = "/api/files/output/my%20pics/2024/a%20b%231%3F%25.png"

    async def scenario() -> None:
        async with (
            Running(tmp_path, catalog) as srv,
            srv.session.ws_connect(f"{srv.base}/api/ws") as ws,
        ):
            status, body = await srv.submit(workflow)
            assert status == 201
            events = await events_until_finished(ws, body["run_id"])
            finished = [e for e in events if e["type"] == "node.finished"]
            assert finished[0]["report"]["images"][0]["url"] == expected

            run = await srv.until_done(body["run_id"])
            picture = run["outputs"]["save"]["images"][0]
            assert picture == {
                "filename": NAME,
                "subfolder": SUBFOLDER,
                "type": "output",
                "url": expected,
            }
            async with srv.session.get(f"{srv.base}/api/runs") as r:
                listed = (await r.json())["runs"][0]["outputs"]["save"]["images"][0]
            assert listed["url"] == expected
            async with srv.session.get(yarl_url(srv.base + picture["url"])) as r:
                assert r.status == 200 and await r.read() == PNG

            _, other = await srv.submit(GOOD)  # reports without pictures are left alone
            assert (await srv.until_done(other["run_id"]))["outputs"]["o"] == {
                "value": 6.0,
                "title": "",
            }
            # the stored record is what the node reported: URLs are added when served
            assert "url" not in srv.store.get(body["run_id"]).outputs["save"]["images"][0]

    asyncio.run(scenario())
