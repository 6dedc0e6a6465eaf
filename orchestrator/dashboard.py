"""The compliance dashboard: a read-only page of the serving app, for people without a
terminal (``GET /dashboard``).

- The page, its script and its style are static files of this package, served by the
  app itself: no build step, no CDN, nothing from another origin.
- Its data (``GET /dashboard/data``, ``sisa.evidence.overview``) needs the bearer token
  ``serving.read_token``, which can read and do nothing else. The token that can forget
  is refused there, so nobody is asked to paste it into a page. The page keeps the token
  in memory only: a login form, never the URL, a cookie or storage.
- It shows request IDs and salted hashes only, never a raw ID. A request's ``reason`` is
  free text from whoever filed it, so the script puts every value into the page as text,
  and the page is served with a Content-Security-Policy that runs no inline script and
  loads nothing from elsewhere: a reason holding markup shows as that markup, and runs
  nothing.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from orchestrator.api_guards import token_matches

# no inline script or style, nothing from another origin, no framing, no form posts
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
FILES = {  # name -> media type
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


def _static() -> dict[str, bytes]:
    folder = resources.files("orchestrator") / "dashboard_page"
    return {name: (folder / name).read_bytes() for name in FILES}


def add_dashboard(
    app: FastAPI, backend: Any, read_sha256: bytes | None, forget_sha256: bytes | None
) -> None:
    """Route ``/dashboard``, its two files and its data on ``app``."""
    files = _static()

    def page(name: str) -> Response:
        return Response(files[name], media_type=FILES[name], headers=HEADERS)

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        return page("index.html")

    @app.get("/dashboard/app.js", include_in_schema=False)
    async def script() -> Response:
        return page("app.js")

    @app.get("/dashboard/app.css", include_in_schema=False)
    async def style() -> Response:
        return page("app.css")

    @app.get(
        "/dashboard/data",
        responses={
            401: {"description": "missing or wrong read token"},
            403: {"description": "no serving.read_token set"},
        },
    )
    async def data(request: Request) -> JSONResponse:
        """The dashboard's data (``sisa.evidence.overview``): every request's state, age,
        deadline and receipt, the last audit, shards rolled back, deletions per day.
        Needs ``Authorization: Bearer <serving.read_token>``."""
        if read_sha256 is None:
            raise HTTPException(
                403, "the dashboard is off: start the server with serving.read_token"
            )
        header = request.headers.get("authorization")
        given = header.encode("latin-1") if header is not None else None
        if forget_sha256 is not None and token_matches(given, forget_sha256):
            raise HTTPException(
                401,
                "this is the token that can forget; the dashboard takes serving.read_token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not token_matches(given, read_sha256):
            raise HTTPException(
                401, "missing or wrong read token", headers={"WWW-Authenticate": "Bearer"}
            )
        return JSONResponse(await backend.overview(), headers=HEADERS)
