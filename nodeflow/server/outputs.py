"""Ready URLs for the pictures output nodes report, so clients need not build them.

Output nodes report pictures as ``{"filename", "subfolder", "type"}`` (ComfyUI's shape, which
existing clients understand). Turning that into a fetchable URL means knowing which folder a
``type`` lives in, that ``"."`` is the folder itself, and that names must be percent-quoted:
each client got it slightly wrong on its own, so the server adds ``url`` beside the three keys
(``/api/files/output/<subfolder>/<filename>``), in run records and in ``node.finished`` events.

Done when a report is *served* rather than when it is stored, so runs recorded before this
existed get their URLs too, and the stored history stays what the node reported.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

#: Picture ``type`` -> the ``/api/files/<kind>`` route its file is served from. ``preview``
#: files live in the output folder's ``previews/`` subfolder, so they are output files too.
#: An entry without ``type`` is taken as ``output``; any other type gets no URL: we would not know
#: where its file is.
FILE_ROUTES: dict[str, str] = {"output": "output", "preview": "output", "input": "input"}


def image_url(image: dict[str, Any]) -> str | None:
    """The URL serving one reported picture, or None when the entry does not say where it is."""
    kind = FILE_ROUTES.get(image.get("type", "output"))
    filename, subfolder = image.get("filename"), image.get("subfolder", "")
    if kind is None or not isinstance(filename, str) or not isinstance(subfolder, str):
        return None
    parts = [p for p in f"{subfolder}/{filename}".split("/") if p not in ("", ".")]
    if not parts:
        return None
    return f"/api/files/{kind}/" + "/".join(quote(p, safe="") for p in parts)


def report_with_urls(report: Any) -> Any:
    """A copy of one node's report with ``url`` added to each picture in its ``images`` list.

    Anything that is not such a report comes back unchanged (the same object), so a plugin's
    output node may report whatever it likes.
    """
    if not isinstance(report, dict) or not isinstance(report.get("images"), list):
        return report
    images = []
    for image in report["images"]:
        url = image_url(image) if isinstance(image, dict) else None
        images.append(image if url is None else {**image, "url": url})
    return {**report, "images": images}


def outputs_with_urls(outputs: dict[str, Any]) -> dict[str, Any]:
    """A run record's ``outputs`` (node id -> report) with every picture's ``url`` added."""
    return {node: report_with_urls(report) for node, report in outputs.items()}
