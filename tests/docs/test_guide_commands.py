"""The README and the guide pages name only commands and options that exist.

Every ``clbench <command>`` written in README.md, docs/index.md or docs/guide/*.md must be a subcommand of the
real parser, and every ``--option`` after it on the same line (up to the next ``clbench``, or the end of its inline code span) must be an option of
that subcommand. An ``--option`` on a line without ``clbench`` must be an option of some subcommand, unless the
line is about another program (``ray start``, ``mkdocs``). Every guide page must be in the mkdocs nav.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from clbench.protocols.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "docs" / "index.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
OTHER_PROGRAMS = ("ray start", "mkdocs")
COMMAND = re.compile(r"\bclbench((?:\s+--debug)?)\s+([a-z]+)\b")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")
# words that follow "clbench" in prose ("the clbench command", "clbench needs Python ...")
PROSE = {"command", "needs", "runs", "uses", "version", "is", "writes", "process", "processes"}


def _options() -> tuple[dict[str, set[str]], set[str]]:
    parser = build_parser()
    top = {o for a in parser._actions for o in a.option_strings}
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    per = {name: {o for a in p._actions for o in a.option_strings} | top for name, p in sub.choices.items()}
    return per, set().union(*per.values())


def _problems(text: str, where: str, per: dict[str, set[str]], every: set[str]) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        matches = list(COMMAND.finditer(line))
        if not matches:
            if not any(p in line for p in OTHER_PROGRAMS):
                out += [f"{where}:{n}: {o} is no clbench option" for o in OPTION.findall(line) if o not in every]
            continue
        for i, m in enumerate(matches):
            cmd = m.group(2)
            if cmd in PROSE:
                continue
            if cmd not in per:
                out.append(f"{where}:{n}: clbench {cmd} is no clbench command (valid: {', '.join(sorted(per))})")
                continue
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            if m.start() and line[m.start() - 1] == "`" and "`" in line[m.end():end]:  # an inline code span ends it
                end = line.index("`", m.end())
            segment = line[m.end():end]
            for other in OTHER_PROGRAMS:
                segment = segment.split(other)[0]
            out += [f"{where}:{n}: {o} is no option of clbench {cmd}" for o in OPTION.findall(segment) if o not in per[cmd]]
    return out


def test_the_checker_finds_a_wrong_option_and_command():
    per, every = _options()
    bad = _problems("clbench run CONFIG --no-such-flag\nclbench frobnicate\nuse `--sampler` on report: clbench report --sampler x",
                    "t", per, every)
    assert len(bad) == 3, bad


def test_readme_and_guide_name_only_real_commands_and_options():
    per, every = _options()
    problems = [p for page in PAGES for p in _problems(page.read_text(encoding="utf-8"), page.relative_to(ROOT).as_posix(), per, every)]
    assert not problems, "\n".join(problems)


def test_every_guide_page_is_in_the_nav():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)["nav"]

    def pages(item) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, dict):
            return [p for v in item.values() for p in pages(v)]
        return [p for v in item for p in pages(v)]

    listed = set(pages(nav))
    guide = {f"guide/{p.name}" for p in (ROOT / "docs" / "guide").glob("*.md")}
    assert guide and not guide - listed, f"guide pages missing from mkdocs.yml nav: {sorted(guide - listed)}"
