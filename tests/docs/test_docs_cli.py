"""docs/cli.md documents every subcommand and option the parser has; the docs link up; examples parse.

Everything is generated from ``medseg.cli.build_parser()``: a subcommand or option added to the CLI without
documentation fails here. In docs/cli.md each command has a heading naming it in backticks (e.g.
``### `medseg synth brats` ``); its section runs to the next such heading and must show every option string
(``--no-amp`` too), every positional argument's name, and every choice of every option.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from medseg.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CLI_MD = DOCS / "cli.md"
HEADING = re.compile(r"^#{1,6}\s+`(medseg(?: [a-z][a-z0-9-]*)*)`\s*$", re.MULTILINE)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _commands(parser: argparse.ArgumentParser, path: str = "medseg") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (command path, parser) pair, depth first: ``medseg``, ``medseg synth``, ``medseg synth brats``, ..."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")


def _documented_items(parser: argparse.ArgumentParser) -> list[str]:
    """What a command's section must show: option strings, positional names, option choices."""
    items: list[str] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            continue  # each subcommand has its own section
        if action.option_strings:
            items.extend(action.option_strings)
            items.extend(str(choice) for choice in action.choices or ())
        else:
            metavar = action.metavar if isinstance(action.metavar, str) else action.dest
            items.append(metavar)
    return items


def _sections() -> dict[str, str]:
    text = CLI_MD.read_text(encoding="utf-8")
    matches = list(HEADING.finditer(text))
    sections: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        sections[match.group(1)] = text[match.end() : end]
    return sections


def _mentions(section: str, item: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(item)}(?![\w-])", section) is not None


COMMANDS = dict(_commands(build_parser()))


def test_the_parser_has_nested_subcommands_to_walk():
    assert "medseg synth brats" in COMMANDS and "medseg train" in COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_section_listing_all_its_options(command):
    sections = _sections()
    assert command in sections, f"docs/cli.md has no heading `{command}`"
    missing = [item for item in _documented_items(COMMANDS[command]) if not _mentions(sections[command], item)]
    assert not missing, f"docs/cli.md section `{command}` does not show {missing}"


def test_cli_md_has_no_section_for_a_command_that_does_not_exist():
    assert sorted(set(_sections()) - set(COMMANDS)) == []


def _bash_commands(text: str) -> Iterator[str]:
    """The ``medseg ...`` lines of the ```bash blocks, with backslash continuations joined."""
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("medseg "):
                yield line


def test_every_medseg_example_in_the_user_docs_parses():
    examples = [
        (path.name, line)
        for path in (CLI_MD, DOCS / "index.md", ROOT / "README.md")
        for line in _bash_commands(path.read_text(encoding="utf-8"))
    ]
    assert len(examples) >= 10
    parser = build_parser()
    for name, line in examples:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                parser.parse_args(shlex.split(line)[1:])
        except SystemExit as exc:
            if exc.code not in (0, None):  # 0: --help or --version
                raise AssertionError(f"{name}: example does not parse: {line}") from exc


def test_index_links_every_doc_and_notebook():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = {Path(target).name for target in LINK.findall(index)}
    docs = {path.name for path in DOCS.glob("*.md")} - {"index.md"}
    assert sorted(docs - linked) == [], "docs/index.md does not link these pages"
    notebooks = {path.name for path in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks and sorted(notebooks - linked) == [], "docs/index.md does not link these notebooks"


@pytest.mark.parametrize("page", ["README.md", "docs/index.md", "docs/cli.md"])
def test_relative_links_point_at_existing_files(page):
    path = ROOT / page
    broken = [
        target
        for target in LINK.findall(path.read_text(encoding="utf-8"))
        if "://" not in target and not (path.parent / target).exists()
    ]
    assert broken == [], f"{page} links to missing files"


def test_readme_quick_start_is_make_demo_then_make_test():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick_start, flags=re.DOTALL).group(1)
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["make demo", "make test"]
