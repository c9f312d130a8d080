"""One self-contained HTML page: inline CSS, figures embedded as base64 PNG ``data:`` URIs, no script, no network."""

from __future__ import annotations

import base64
import html

from .document import Block, FigureRef, Heading, Table, Text

_CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #1b1b1b; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #bbb; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .88em; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; max-width: 1100px; }
th, td { border-top: 1px solid #ccc; border-bottom: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
td { white-space: nowrap; }
div.table { overflow-x: auto; }
td.best { font-weight: bold; background: #e6f4e6; }
tr.failed td { color: #b00020; }
p.note { font-size: .85em; color: #555; }
p.warn { color: #b00020; font-weight: bold; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #444; }
nav ul { columns: 2; font-size: .9em; }
"""


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    for r, row in enumerate(t.rows):
        cls = ' class="failed"' if r in t.failed_rows else ""
        cells = "".join(f'<td class="best">{html.escape(v)}</td>' if (r, c) in t.best else f"<td>{html.escape(v)}</td>"
                        for c, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return (f'<div class="table"><table id="table-{html.escape(t.name)}"><caption>{html.escape(t.caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _figure_html(f: FigureRef) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure id="figure-{html.escape(f.name)}"><img alt="{html.escape(f.caption)}" '
            f'data-name="{html.escape(f.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")


def render_html(title: str, blocks: list[Block]) -> str:
    """The report page; every figure is an ``<img src="data:image/png;base64,...">``, nothing is fetched."""
    toc = [f'<li><a href="#{html.escape(b.anchor)}">{html.escape(b.text)}</a></li>'
           for b in blocks if isinstance(b, Heading) and b.level == 2 and b.anchor]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if toc:
        parts.append(f"<nav><ul>{''.join(toc)}</ul></nav>")
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            parts.append(f"<h{b.level}{anchor}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            parts.append(f'<p class="{html.escape(b.kind)}">{html.escape(b.text)}</p>')
        elif isinstance(b, Table):
            parts.append(_table_html(b))
        elif isinstance(b, FigureRef):
            parts.append(_figure_html(b))
    parts.append("</body></html>\n")
    return "\n".join(parts)
