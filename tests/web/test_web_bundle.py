"""The committed editor bundle was built from the committed sources (no Node.js, no browser).

``web/scripts/source-hash.mjs`` writes ``web/dist/source-hash.txt`` at build time; this mirrors
its definition: sha256 over, in order of their sorted relative paths (POSIX separators, compared
as JavaScript compares strings: by UTF-16 code units), ``package-lock.json``, ``package.json``,
``index.html``, ``vite.config.ts``, ``tsconfig*.json`` in ``web/`` and every file under
``web/src/`` (directories followed as ``statSync`` does); for each file its UTF-8 relative path,
NUL, its length in bytes as decimal ASCII, NUL, its bytes. A source change without a rebuild (or
a bundle built from uncommitted sources) fails here.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from webharness import IN_CI, REPO

WEB = REPO / "web"
ROOT_FILES = ("package-lock.json", "package.json", "index.html", "vite.config.ts")


def _walk(folder: Path) -> list[Path]:
    found = []
    for name in os.listdir(folder):
        full = folder / name
        if full.is_dir():  # follows symlinks, as statSync does
            found.extend(_walk(full))
        else:
            found.append(full)
    return found


def source_files(root: Path = WEB) -> list[str]:
    files = [
        root / name
        for name in os.listdir(root)
        if name in ROOT_FILES or re.fullmatch(r"tsconfig.*\.json", name, flags=re.DOTALL)
    ]
    files.extend(_walk(root / "src"))
    relative = [f.relative_to(root).as_posix() for f in files]
    return sorted(relative, key=lambda s: s.encode("utf-16-be", "surrogatepass"))


def source_hash(root: Path = WEB) -> str:
    digest = hashlib.sha256()
    for rel in source_files(root):
        data = (root / rel).read_bytes()
        digest.update(rel.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
        digest.update(str(len(data)).encode("ascii"))
        digest.update(b"\0")
        digest.update(data)
    return digest.hexdigest()


def test_mirror_of_the_hash_definition(tmp_path):
    """The Python mirror on a fixture folder, against a hand-computed digest."""
    (tmp_path / "src" / "b").mkdir(parents=True)
    (tmp_path / "src" / "b" / "z.ts").write_bytes(b"z")
    (tmp_path / "src" / "a.ts").write_bytes("é\n".encode())
    (tmp_path / "package.json").write_bytes(b"{}")
    (tmp_path / "tsconfig.node.json").write_bytes(b"")
    (tmp_path / "README.md").write_bytes(b"not hashed")
    assert source_files(tmp_path) == [
        "package.json", "src/a.ts", "src/b/z.ts", "tsconfig.node.json",
    ]  # fmt: skip
    expected = hashlib.sha256(
        b"package.json\x002\x00{}"
        b"src/a.ts\x003\x00\xc3\xa9\n"
        b"src/b/z.ts\x001\x00z"
        b"tsconfig.node.json\x000\x00"
    ).hexdigest()
    assert source_hash(tmp_path) == expected


def test_committed_bundle_matches_the_sources():
    recorded = WEB / "dist" / "source-hash.txt"
    if not recorded.is_file():
        reason = f"{recorded} is missing: build the editor (npm --prefix web run build)"
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    assert recorded.read_text() == source_hash() + "\n", (
        "web/dist is stale: the editor's sources changed since the bundle was built; "
        "rebuild it with npm --prefix web ci && npm --prefix web run build and commit web/dist"
    )
