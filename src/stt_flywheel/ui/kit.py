"""What every page of `stt-flywheel ui` is built with: the frame (a header of links that wraps on a
phone), links, Markdown, and the report kit's tables and figures (`stt_flywheel.reporting`).

Pages are rendered on the server; no script runs in them. Every value from the store, a ledger or
a request is escaped where it meets HTML (`reporting.cell`), except `Html`, which is markup this
module or a page built from escaped parts.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from functools import cache
from typing import Any
from urllib.parse import quote

from stt_flywheel.reporting import STYLE, cell

__all__ = ["Html", "esc", "facts", "frame", "link", "markdown", "para", "scrolling", "section"]

# The report kit's rules, and what a served page adds: a header that wraps, tables that scroll
# inside themselves rather than the page (a phone is 390 px wide), figures that shrink.
UI_STYLE = (
    STYLE
    + """
body{margin:0 auto;padding:0 1rem 2rem;box-sizing:border-box}
header{display:flex;flex-wrap:wrap;gap:.3rem 1rem;align-items:baseline;padding:.6rem 0;
border-bottom:1px solid #dadce0;margin-bottom:1rem}
header a{text-decoration:none;color:#1a73e8}header a.here{font-weight:600;color:#202124}
header .name{font-weight:700;color:#202124;margin-right:.5rem}
.scroll{max-width:100%;overflow-x:auto}
h1{font-size:1.5rem;overflow-wrap:anywhere}h2{font-size:1.15rem;margin-top:1.6rem}
p,li{overflow-wrap:anywhere}
.headline{font-size:1.05rem;line-height:1.6}
.ok{color:#137333}.warn{color:#b06000}.bad{color:#c5221f}
.ops span{padding:0 .15rem;border-radius:3px}.ops .sub{background:#fce8b2}.ops .del{background:#f6c8c4;
text-decoration:line-through}.ops .ins{background:#ceead6}
form.inline{display:inline}input[type=text]{max-width:100%}
audio{max-width:100%}
"""
)

NAV = (
    ("/", "Now"),
    ("/versions", "Versions"),
    ("/runs", "Runs"),
    ("/canaries", "Canaries"),
    ("/live", "Live quality"),
    ("/review", "Review"),
)


class Html(str):
    """Markup to place as it is (a link, a cell built from escaped parts)."""

    def __html__(self) -> str:
        return str(self)


esc = cell  # a value as HTML: markup as it is, anything else escaped (floats to four places)


def link(href: str, text: Any) -> Html:
    """`<a>` to a path of this server, `href` URL-quoted (a value from outside, like a prediction id,
    is quoted whole by the caller, so that its `/` and `?` stay its own) and HTML-escaped."""
    return Html(f"<a href='{html.escape(quote(href, safe='/?=&#:%'))}'>{esc(text)}</a>")


def para(*parts: Any, cls: str = "") -> Html:
    klass = f" class='{cls}'" if cls else ""
    return Html(f"<p{klass}>" + "".join(esc(p) for p in parts) + "</p>")


def section(title: str, *parts: Any) -> Html:
    return Html(f"<h2>{html.escape(title)}</h2>" + "".join(esc(p) for p in parts))


def facts(rows: Iterable[tuple[str, Any]]) -> Html:
    """A two-column table of named values, the names as row headers."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in rows)
    return scrolling(f"<table>{body}</table>")


def scrolling(table_html: str) -> Html:
    return Html(f"<div class='scroll'>{table_html}</div>")


@cache
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # html off: a report's text (a reason, a user's words) is shown, never run
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown(text: str) -> Html:
    """A Markdown report (trigger, dataset, deploy) as HTML; raw HTML in it is escaped."""
    rendered = _markdown().render(text)
    return Html(
        rendered.replace("<table>", "<div class='scroll'><table>").replace("</table>", "</table></div>")
    )


def frame(title: str, body: Iterable[Any], here: str = "") -> str:
    """A whole page: the header of links, the title, the body."""
    nav = "".join(
        f"<a href='{href}'{' class=here' if href == here else ''}>{html.escape(name)}</a>"
        for href, name in NAV
    )
    content = "".join(esc(part) for part in body)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)} · stt-flywheel</title><style>{UI_STYLE}</style></head><body>"
        f"<header><span class='name'>stt-flywheel</span>{nav}</header>"
        f"<h1>{html.escape(title)}</h1>{content}</body></html>"
    )
