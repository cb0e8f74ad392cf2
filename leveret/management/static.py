"""Files of the static/ folder (package data), served under / for the web UI.

`static_file("app.js")` -> a 200 `Response`, or None when there is no such
file. Dot files and paths leaving the folder are never served. The folder
holds the web UI: index.html and app.js (its pages), login.html with its
assets (`PUBLIC_FILES`, the only files served before login), and vendor/
(uPlot and cytoscape from npm, with their licences).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import unquote

from leveret.management.http import Response

ROOT = Path(__file__).resolve().parent / "static"
PUBLIC_FILES = frozenset({"login.html", "login.js", "style.css"})


def static_file(path: str) -> Response | None:
    parts = [p for p in unquote(path).split("/") if p]
    if not parts or any(p.startswith(".") or "\\" in p for p in parts):
        return None
    target = ROOT.joinpath(*parts)
    try:
        if not target.resolve().is_relative_to(ROOT) or not target.is_file():
            return None
        body = target.read_bytes()
    except (OSError, ValueError):
        return None
    content_type, _ = mimetypes.guess_type(target.name)
    if content_type is not None and content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    return Response(200, body, content_type or "application/octet-stream")
