"""A small document model of the report (headings, text, tables, figures) and its Markdown/LaTeX renderings.

The same blocks are rendered to Markdown here and to HTML by :mod:`clbench.reports.html`. Every text that
comes from a run (labels, errors) is escaped in both: HTML special characters become entities in Markdown
as in HTML, so a label like ``<b>x</b>`` shows as written.
"""

from __future__ import annotations

import html
import re
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
    """A formatted table: ``rows`` of display strings; ``best`` (row, column) cells in bold, ``second`` underlined;
    ``failed_rows`` flagged; ``groups`` an optional header row of (label, column span) above ``columns``;
    ``notes`` footnotes printed under the table; the first ``label_cols`` columns are text, the rest numbers.

    ``data`` is the numeric frame written as CSV; ``name`` the file stem under ``tables/``.
    """

    name: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    data: pd.DataFrame
    best: set[tuple[int, int]] = field(default_factory=set)
    failed_rows: set[int] = field(default_factory=set)
    second: set[tuple[int, int]] = field(default_factory=set)
    groups: list[tuple[str, int]] | None = None
    notes: list[str] = field(default_factory=list)
    label_cols: int = 1


@dataclass
class FigureRef:
    """A rendered figure: PNG bytes (for embedding), file stem under ``figures/``, caption and print width (inches)."""

    name: str
    caption: str
    png: bytes
    width_in: float = 3.3


Block = Heading | Text | Table | FigureRef


def md_escape(s: str) -> str:
    """Text for a Markdown file: HTML special characters as entities (as report.html does), pipes escaped."""
    return html.escape(str(s), quote=False).replace("|", "\\|")


def table_markdown(t: Table) -> str:
    """Pipe table; best cells in **bold**, second <u>underlined</u>; column groups prefix their columns' headers."""
    headers = list(t.columns)
    if t.groups:
        i = 0
        for label, span in t.groups:
            for j in range(i, i + span):
                if label:
                    headers[j] = f"{label} · {headers[j]}"
            i += span
    lines = ["| " + " | ".join(md_escape(c) for c in headers) + " |",
             "|" + "|".join("---" if i < t.label_cols else "---:" for i in range(len(headers))) + "|"]
    for r, row in enumerate(t.rows):
        cells = []
        for c, v in enumerate(row):
            text = md_escape(v)
            if (r, c) in t.best:
                text = f"**{text}**"
            elif (r, c) in t.second:
                text = f"<u>{text}</u>"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [md_escape(n) + "  " for n in t.notes] if t.notes else []
    return "\n".join(lines).rstrip()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
                  ">": r"\textgreater{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "—": "--", "–": "--", "−": "$-$", "α": r"$\alpha$", "†": r"$^\dagger$", "·": r"$\cdot$",
                  "χ": r"$\chi$", "≥": r"$\geq$", "≤": r"$\leq$", "√": r"$\surd$", "×": r"$\times$", "→": r"$\to$",
                  "¹": r"\textsuperscript{1}", "²": r"\textsuperscript{2}", "³": r"\textsuperscript{3}"}


def latex_escape(s: str) -> str:
    """Text for LaTeX (pdflatex-safe: the few non-ASCII symbols the report uses become commands)."""
    return "".join(_LATEX_SPECIAL.get(ch, _LATEX_SYMBOLS.get(ch, ch)) for ch in str(s))


def table_latex(t: Table) -> str:
    """A booktabs ``table`` environment (``\\usepackage{booktabs}``): column groups as ``\\multicolumn`` with
    ``\\cmidrule``, best cells in ``\\textbf``, second in ``\\underline``, ± as ``$\\pm$``, notes under the table."""
    ncol = len(t.columns)
    spec = "l" * t.label_cols + "r" * (ncol - t.label_cols)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{latex_escape(t.caption)}}}",
             rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:-]+', '-', t.name)}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if t.groups:
        cells, rules, i = [], [], 0
        for label, span in t.groups:
            if label and span > 1:
                cells.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}")
            else:
                cells.append(latex_escape(label))
            if label:
                rules.append(rf"\cmidrule(lr){{{i + 1}-{i + span}}}")
            i += span
        lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    lines += [" & ".join(latex_escape(c) for c in t.columns) + r" \\", r"\midrule"]
    for r, row in enumerate(t.rows):
        cells = []
        for c, v in enumerate(row):
            text = latex_escape(v)
            if (r, c) in t.best:
                text = rf"\textbf{{{text}}}"
            elif (r, c) in t.second:
                text = rf"\underline{{{text}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if t.notes:
        lines += [r"\par\smallskip\footnotesize"] + [latex_escape(n) + r"\par" for n in t.notes]
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


def render_markdown(title: str, blocks: list[Block]) -> str:
    """The whole report as Markdown; figures link to ``figures/<name>.png`` next to the file."""
    out = [f"# {md_escape(title)}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + md_escape(b.text), ""]
        elif isinstance(b, Text):
            out += [("> " if b.kind == "warn" else "") + md_escape(b.text), ""]
        elif isinstance(b, Table):
            out += [f"*{md_escape(b.caption)}*", "", table_markdown(b), ""]
        elif isinstance(b, FigureRef):
            alt = md_escape(b.caption).replace("[", "\\[").replace("]", "\\]")
            out += [f"![{alt}](figures/{b.name}.png)", "", f"*{md_escape(b.caption)}*", ""]
    return "\n".join(out)
