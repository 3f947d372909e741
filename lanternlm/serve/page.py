"""The web page at ``/``: plain HTML, CSS and JavaScript modules in ``static/``, shipped as
package data (no build step, no Node, nothing fetched from elsewhere: the page's Content
Security Policy allows this server only).

The page is a client of the documented API and of nothing else; it holds no data, so it
and its files answer without the API key (the page asks for the key and sends it).
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"

#: Paths that answer without the API key: the page and its files (no data in them), /health.
PUBLIC = ("/", "/health")
PUBLIC_PREFIX = "/static/"

#: Only this server: scripts, styles, images and API calls (inline style attributes allowed).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def public(path: str) -> bool:
    """Whether ``path`` answers without the API key.

    >>> public("/"), public("/static/app.js"), public("/v1/models")
    (True, True, False)
    """
    return path in PUBLIC or path.startswith(PUBLIC_PREFIX)


def add_page(app) -> None:
    """Serve ``static/index.html`` at ``/`` and ``static/`` under ``/static`` (not in the
    OpenAPI document: they are not API)."""
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
