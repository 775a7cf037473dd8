"""The kit every HTML page of the project is built with: one self-contained page (CSS inline, plots
as inline SVG from matplotlib's Agg backend, no scripts, no external files), tables and figures.

Vertex AI renders an HTML artifact inline, and a page saved on its own must still read whole.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["STYLE", "cell", "figure", "page", "pyplot", "svg", "table"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#202124;max-width:72rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #dadce0;padding:.25rem .45rem;text-align:left;font-size:.85rem;vertical-align:top}
td pre{max-width:44rem}svg{max-width:100%;height:auto}
th{background:#f1f3f4}.pass{color:#137333;font-weight:600}.fail{color:#c5221f;font-weight:600}
pre{font-size:.8rem;background:#f8f9fa;padding:.4rem;margin:.2rem 0;overflow-x:auto}
figure{margin:.5rem 0 1.5rem}figcaption{font-size:.85rem;color:#5f6368}
.meta{color:#5f6368;font-size:.85rem}
"""


def cell(value: Any) -> str:
    """A value as a table cell shows it: floats to four places (tiny ones in three significant
    digits), NaN as NaN, markup (anything with `__html__`, like a link) as it is, everything else
    escaped."""
    if hasattr(value, "__html__"):
        return str(value.__html__())
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.3g}" if value and abs(value) < 1e-3 else f"{value:.4f}"
    return html.escape(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    # labels come from users' metadata: drawn as the text they are, never parsed as TeX (mathtext)
    matplotlib.rcParams.update(
        {"svg.fonttype": "none", "svg.hashsalt": "stt-flywheel", "font.size": 9, "text.parse_math": False}
    )
    import matplotlib.pyplot as plt

    return plt
