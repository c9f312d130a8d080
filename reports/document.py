"""A small document model of the report (headings, text, tables, figures) and its Markdown/LaTeX renderings.

The same blocks are rendered to Markdown here and to HTML by :mod:`clbench.reports.html`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2
    anchor: str = ""


@dataclass
class Text:
    """A paragraph; ``kind`` is "p", "note" (small print) or "warn" (e.g. failed cells)."""

    text: str
    kind: str = "p"


@dataclass
class Table:
    """A formatted table: ``rows`` of display strings, ``best`` (row, column) cells marked, ``failed_rows`` flagged.

    ``data`` is the numeric frame written as CSV; ``name`` the file stem under ``tables/``.
    """

    name: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    data: pd.DataFrame
    best: set[tuple[int, int]] = field(default_factory=set)
    failed_rows: set[int] = field(default_factory=set)


@dataclass
class FigureRef:
    """A rendered figure: PNG bytes (for embedding), file stem under ``figures/`` and caption."""

    name: str
    caption: str
    png: bytes
    width_px: int = 0


Block = Heading | Text | Table | FigureRef


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def table_markdown(t: Table) -> str:
    """Pipe table; best cells in **bold**; rows of strategies whose every cell failed keep the word "failed"."""
    lines = ["| " + " | ".join(_md_escape(c) for c in t.columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(t.columns))) + "|"]
    for r, row in enumerate(t.rows):
        cells = [f"**{_md_escape(v)}**" if (r, c) in t.best else _md_escape(v) for c, v in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)
    return out.replace("±", r"$\pm$").replace("—", "--").replace("α", r"$\alpha$")


def table_latex(t: Table) -> str:
    """A booktabs ``table`` environment; best cells in \\textbf, ± as $\\pm$ (needs \\usepackage{booktabs})."""
    spec = "l" + "r" * (len(t.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in t.columns) + r" \\", r"\midrule"]
    for r, row in enumerate(t.rows):
        cells = [rf"\textbf{{{latex_escape(v)}}}" if (r, c) in t.best else latex_escape(v) for c, v in enumerate(row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(t.caption)}}}", r"\end{table}", ""]
    return "\n".join(lines)


def render_markdown(title: str, blocks: list[Block]) -> str:
    """The whole report as Markdown; figures link to ``figures/<name>.png`` next to the file."""
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Text):
            out += [("> " if b.kind == "warn" else "") + b.text, ""]
        elif isinstance(b, Table):
            out += [f"*{b.caption}*", "", table_markdown(b), ""]
        elif isinstance(b, FigureRef):
            out += [f"![{b.caption}](figures/{b.name}.png)", "", f"*{b.caption}*", ""]
    return "\n".join(out)
