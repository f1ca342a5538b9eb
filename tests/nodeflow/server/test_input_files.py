"""``/api/files/input/<name>`` serves what the ``input`` file kind's nodes would load: the input
folder first, then the folders a plugin's ``FileKind`` adds (the pack's bundled example picture),
with the same refusals in each."""

from __future__ import annotations

import asyncio

from test_app import Running, yarl_url


def test_input_names_fall_back_to_the_file_kinds_folders_safely(tmp_path):
    async def scenario():
        async with Running(tmp_path) as srv:  # testnodes: input dir, then models/numbers
            numbers = srv.env.models_dir / "numbers"
            numbers.mkdir(parents=True)
            srv.env.input_dir.mkdir(parents=True)
            (numbers / "bundled.png").write_bytes(b"\x89PNG bundled")
            (numbers / "both.png").write_bytes(b"\x89PNG bundled")
            (srv.env.input_dir / "both.png").write_bytes(b"\x89PNG uploaded")
            (tmp_path / "secret.txt").write_text("secret")
            (numbers / "link.png").symlink_to(tmp_path / "secret.txt")

            async with srv.session.get(f"{srv.base}/api/files/input/bundled.png") as r:
                assert r.status == 200 and await r.read() == b"\x89PNG bundled"
                assert r.content_type == "image/png"
            async with srv.session.get(f"{srv.base}/api/files/input/both.png") as r:
                assert await r.read() == b"\x89PNG uploaded"  # the input folder wins
            for path in ["link.png", "../secret.txt", "%2e%2e/secret.txt", "../numbers/x.png",
                         "missing.png"]:  # fmt: skip
                async with srv.session.get(yarl_url(f"{srv.base}/api/files/input/{path}")) as r:
                    assert r.status in (403, 404), path
                    assert "secret" not in await r.text()
            async with srv.session.get(f"{srv.base}/api/files/output/bundled.png") as r:
                assert r.status == 404  # outputs have no fallback

    asyncio.run(scenario())
