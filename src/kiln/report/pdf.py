"""Static reports printed to PDF with WeasyPrint (HTML and CSS to PDF in Python, on the
system's Pango; no browser and no LaTeX).

WeasyPrint is the `report` extra. Its URL fetcher is replaced by one that refuses
everything but embedded ``data:`` URLs: a report fetches nothing from the network or the
disk while it is printed (the static HTML has no such URL left anyway: belt and braces).
"""

from __future__ import annotations

from typing import Any

#: page set-up added to every printed report: A4 with margins, wide tables and code wrap
_PRINT_CSS = """
@page { size: A4; margin: 14mm 12mm; }
body { font-size: 10pt; }
pre { white-space: pre-wrap; word-break: break-all; }
img { max-width: 100%; }
table { max-width: 100%; }
"""


def _data_only_fetcher(weasyprint: Any) -> Any:
    """A URL fetcher that fetches ``data:`` URLs and refuses every other one."""
    urls = weasyprint.urls
    if hasattr(urls, "URLFetcher"):  # WeasyPrint 66 and later
        return urls.URLFetcher(allowed_protocols=["data"], allow_redirects=False)

    def only_data(url: str, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - older
        if not url.startswith("data:"):
            raise ValueError(f"a report fetches nothing: {url[:80]}")
        return urls.default_url_fetcher(url, *args, **kwargs)

    return only_data


def html_to_pdf(page: str) -> bytes:
    """The PDF of a static report's HTML."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # HarfBuzz-Subset notices
            import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the system's Pango is missing
        from kiln.errors import UsageError

        raise UsageError(
            "PDF reports need WeasyPrint and the system's Pango: "
            f"pip install 'kiln-notebooks[report]' ({exc})"
        ) from None
    import logging

    logging.getLogger("weasyprint").setLevel(logging.ERROR)  # CSS it skips is not news
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        document = weasyprint.HTML(string=page, url_fetcher=_data_only_fetcher(weasyprint))
        data: bytes = document.write_pdf(stylesheets=[weasyprint.CSS(string=_PRINT_CSS)])
    return data
