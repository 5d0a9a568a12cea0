"""Kiln's web UI: server-rendered pages over the same accounts, roles and run path as the API.

Only :func:`kiln.server.app.build_app` imports this package (``install`` adds its routes), so
``import kiln`` and the CLI never load Jinja2. Templates, the stylesheet and the one script are
package data (``templates/``, ``static/``): nothing comes from a CDN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kiln.server.app import ServerContext

#: paths the UI serves without a login (the stylesheet and script the login page uses)
PUBLIC_PREFIXES = ("/ui/static/",)


def install(app: FastAPI, ctx: ServerContext) -> None:
    """Add the pages, the static files and the HTML error pages to ``app``."""
    from kiln.ui import admin, apps, pages, web
    from kiln.ui.catalog import Catalog

    catalog = Catalog(ctx)
    web.install_errors(app, ctx)
    app.include_router(web.static_router())
    app.include_router(apps.router(ctx, catalog))
    app.include_router(admin.router(ctx, catalog))
    app.include_router(pages.router(ctx, catalog))
