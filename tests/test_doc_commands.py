"""Every ``micromill ...`` command written in README.md and docs/*.md parses with the CLI's own
argparse parser (nothing is run), so the docs cannot drift from the command line again (issue 16:
a documented hw_check command used an option ``micromill run`` did not have).

Commands are taken from fenced code blocks (each line from ``micromill`` on, up to a ``#``
comment or ``&&``; a line ending in ``\\`` continues on the next) and from inline code spans
that start with ``micromill``. Left out: synopses (``[``, ``|``, ``<``, ``…``, or a placeholder in
capitals such as ``SUITE.toml``, ``DIR``, ``N``: a form, not a command line), a command named in
prose (``micromill report``: nothing after the sub-command) and table rows, which name a command
with its options listed beside it."""
import re
import shlex
from pathlib import Path

import pytest

from scenarios.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SYNOPSIS = re.compile(r"[\[\]|<>…]|(^|\s)[A-Z][A-Z0-9_]*(\.[a-z0-9]+)?(\s|$)")


def doc_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every micromill command in the Markdown file ``path``."""
    found, fenced, held = [], False, ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced and line.rstrip().endswith("\\"):
            held += line.rstrip()[:-1] + " "
            continue
        line, held = held + line, ""
        if fenced:
            for part in line.split("&&"):
                part = part.split("#", 1)[0].strip().removeprefix("$ ")
                if part.startswith("micromill "):
                    found.append((n, part))
        elif not line.lstrip().startswith("|"):
            found += [(n, span.strip()) for span in re.findall(r"`([^`]+)`", line)
                      if span.strip().startswith("micromill ")]
    return [(n, c) for n, c in found if not SYNOPSIS.search(c) and len(c.split()) > 2]


def test_the_docs_have_commands_to_check():
    commands = [c for path in DOCS for _, c in doc_commands(path)]
    assert len(commands) > 20 and any("hw_check" in c and "--scene" in c for c in commands)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_documented_command_parses(path, capsys):
    parser = build_parser()
    bad = []
    for n, command in doc_commands(path):
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit:
            bad.append(f"{path.name}:{n}: {command}\n    {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not bad, "documented commands the CLI refuses:\n" + "\n".join(bad)
