"""One self-contained HTML page: inline CSS, figures embedded as base64 PNG ``data:`` URIs, no script, no network."""

from __future__ import annotations

import base64
import html

from .document import Block, FigureRef, Heading, Table, Text

_CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1b1b1b; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #333; padding-bottom: .2em; overflow-wrap: anywhere; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #bbb; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
p { overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: .6em 0 .4em; font-size: .85em; max-width: 100%; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3em; }
th, td { border-top: 1px solid #ccc; border-bottom: 1px solid #ccc; padding: .25em .5em; text-align: right; }
th { background: #f2f2f2; font-weight: 600; }
th.group { text-align: center; border-bottom: 1px solid #666; }
td.label, th.label { text-align: left; overflow-wrap: anywhere; }
td.num { white-space: nowrap; }
table.wide { font-size: .78em; }
div.table { overflow-x: auto; margin-bottom: 1.2em; }
td.best { font-weight: bold; background: #e6f4e6; }
td.second { text-decoration: underline; }
tr.failed td { color: #b00020; }
p.tnote { font-size: .8em; color: #444; margin: .1em 0; }
p.note { font-size: .85em; color: #555; }
p.warn { color: #b00020; font-weight: bold; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #444; max-width: 60em; }
nav ul { columns: 2; font-size: .9em; }
"""
#: CSS pixels per inch of print width at which figures are shown (a 3.3 in figure is 528 px wide)
PX_PER_INCH = 160


def _table_html(t: Table) -> str:
    rows_head = []
    if t.groups:
        cells, i = [], 0
        for label, span in t.groups:
            cls = "group" if label else ("label" if i < t.label_cols else "")
            cells.append(f'<th colspan="{span}" class="{cls}">{html.escape(label)}</th>')
            i += span
        rows_head.append(f"<tr>{''.join(cells)}</tr>")
    rows_head.append("<tr>" + "".join(f'<th class="{"label" if i < t.label_cols else "num"}">{html.escape(c)}</th>'
                                      for i, c in enumerate(t.columns)) + "</tr>")
    body = []
    for r, row in enumerate(t.rows):
        cls = ' class="failed"' if r in t.failed_rows else ""
        cells = []
        for c, v in enumerate(row):
            kinds = ["label" if c < t.label_cols else "num"]
            if (r, c) in t.best:
                kinds.append("best")
            elif (r, c) in t.second:
                kinds.append("second")
            cells.append(f'<td class="{" ".join(kinds)}">{html.escape(v)}</td>')
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    notes = "".join(f'<p class="tnote">{html.escape(n)}</p>' for n in t.notes)
    wide = ' class="wide"' if len(t.columns) > 11 else ""
    return (f'<div class="table"><table id="table-{html.escape(t.name)}"{wide}><caption>{html.escape(t.caption)}</caption>'
            f"<thead>{''.join(rows_head)}</thead><tbody>{''.join(body)}</tbody></table>{notes}</div>")


def _figure_html(f: FigureRef) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    width = round(f.width_in * PX_PER_INCH)
    return (f'<figure id="figure-{html.escape(f.name)}"><img alt="{html.escape(f.caption)}" width="{width}" '
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
