"""A rendered HTML document made inert: no scripts, no event handlers, nothing fetched.

Two passes. Each HTML output of the notebook goes through :func:`clean_fragment` (bleach, an
allow-list of tags, attributes and CSS properties wide enough for tables, DataFrames and
images). Then the whole document (template, markdown, outputs) goes through
:func:`strip_active`. It removes elements
that run or embed something (``script``, ``iframe``, ``object``, ``embed``, ``form``, ``base``,
``link``, refreshing ``meta``...), every ``on*`` attribute, ``javascript:``-like URLs, and every
``src`` (and ``srcset``, ``poster``...) that is not an embedded ``data:image/...``: a report
opened from an inbox runs nothing and tells no server it was opened, and the PDF renderer
fetches nothing (no local files either). CSS stays, without ``url(...)`` and ``@import``.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

#: elements dropped with everything inside them
_DROP_WITH_CONTENT = frozenset(
    {"script", "iframe", "object", "embed", "applet", "frame", "frameset", "noscript",
     "template", "audio", "video", "canvas", "svg:script"}
)  # fmt: skip
#: elements dropped, their content kept
_DROP_TAG = frozenset({"form", "base", "link", "input", "button", "select", "textarea"})
_VOID = frozenset(
    {"area", "br", "col", "hr", "img", "meta", "param", "source", "track", "wbr",
     "input", "link", "base", "embed"}
)  # fmt: skip
#: attributes holding a URL the browser may load or follow
_URL_ATTRS = frozenset(
    {"src", "href", "srcset", "poster", "background", "action", "formaction", "xlink:href",
     "data", "codebase", "cite", "longdesc", "lowsrc", "dynsrc", "ping"}
)  # fmt: skip
_LOADED = frozenset({"src", "srcset", "poster", "background", "lowsrc", "dynsrc", "data"})
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,", re.IGNORECASE)
_SCRIPT_URL = re.compile(r"^\s*(javascript|vbscript|data|file):", re.IGNORECASE)
_CSS_ACTIVE = re.compile(r"@import[^;]*;?|url\s*\([^)]*\)|expression\s*\(", re.IGNORECASE)


def _refreshes(attrs: list[tuple[str, str | None]]) -> bool:
    """A ``meta http-equiv`` other than a content security policy (refresh, set-cookie)."""
    equiv = [(v or "").lower() for k, v in attrs if k.lower() == "http-equiv"]
    return bool(equiv) and equiv != ["content-security-policy"]


class _Stripper(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.out: list[str] = []
        self.skipping: list[str] = []  # open elements dropped with their content
        self.in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, closed=True)

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], *, closed: bool) -> None:
        if self.skipping:
            if tag == self.skipping[-1] and not closed and tag not in _VOID:
                self.skipping.append(tag)
            return
        if tag in _DROP_WITH_CONTENT:
            if not closed and tag not in _VOID:
                self.skipping.append(tag)
            return
        if tag in _DROP_TAG:
            return
        if tag == "meta" and _refreshes(attrs):
            return
        kept = []
        for key, value in attrs:
            name = key.lower()
            if name.startswith("on") or (name in ("style",) and _CSS_ACTIVE.search(value or "")):
                continue
            if name in _URL_ATTRS:
                text = (value or "").strip()
                if name in _LOADED:
                    if not _DATA_IMAGE.match(text):
                        continue
                elif _SCRIPT_URL.match(text):
                    continue
            kept.append(name if value is None else f'{name}="{html.escape(value, quote=True)}"')
        self.out.append(f"<{tag}{''.join(' ' + a for a in kept)}{' /' if closed else ''}>")
        if tag == "style" and not closed:
            self.in_style = True

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if tag in _DROP_WITH_CONTENT or tag in _DROP_TAG or tag in _VOID:
            return
        if tag == "style":
            self.in_style = False
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.in_style:
            self.out.append(_CSS_ACTIVE.sub("", data))
        elif self.cdata_elem is None:
            self.out.append(data)
        else:
            self.out.append(data)

    def handle_entityref(self, name: str) -> None:
        if not self.skipping:
            self.out.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        if not self.skipping:
            self.out.append(f"&#{name};")

    def handle_comment(self, data: str) -> None:
        return  # conditional comments are active content in some mail clients

    def handle_decl(self, decl: str) -> None:
        if not self.skipping:
            self.out.append(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        return

    def unknown_decl(self, data: str) -> None:
        return


def strip_active(document: str) -> str:
    """``document`` without anything that runs, embeds or fetches (see the module doc)."""
    stripper = _Stripper()
    stripper.feed(document)
    stripper.close()
    return "".join(stripper.out)


#: tags an HTML output may keep in a static report (bleach's defaults and these)
_FRAGMENT_TAGS = frozenset(
    {"p", "div", "span", "pre", "code", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6",
     "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col",
     "img", "figure", "figcaption", "sub", "sup", "dl", "dt", "dd", "small", "u", "s",
     "del", "ins", "mark", "details", "summary", "style", "center", "font"}
)  # fmt: skip
_FRAGMENT_ATTRS = ["class", "id", "style", "title", "alt", "src", "width", "height", "align",
                   "valign", "colspan", "rowspan", "border", "href", "color", "size"]  # fmt: skip


def clean_fragment(fragment: str) -> str:
    """One HTML output through an allow-list (what is not allowed is escaped, as text)."""
    import warnings

    import bleach

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bleach warns about style without a CSS sanitizer
        try:
            from bleach.css_sanitizer import CSSSanitizer

            css: object | None = CSSSanitizer()
        except ImportError:  # pragma: no cover - tinycss2 missing
            css = None
        return str(
            bleach.clean(
                strip_active(fragment),  # first: scripts go with their text
                tags=set(bleach.ALLOWED_TAGS) | _FRAGMENT_TAGS,
                attributes={"*": _FRAGMENT_ATTRS},
                protocols={"http", "https", "mailto", "data"},
                css_sanitizer=css,
                strip=True,
                strip_comments=True,
            )
        )


#: the policy a static report declares for the browsers that read it
STATIC_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:"
