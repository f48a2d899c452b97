"""The docs' fenced blocks as tests read them: what kind each is, and its commands one by one.

A block's kind is named by an HTML comment on the line before its fence, `<!-- doc: KIND -->`;
a block without one holds commands to run. The kinds:

- commands (no comment): shell commands, run one after another on tiny data; each must exit 0.
- output: `$ command` lines, each followed by what it prints; run and compared (`/path/to/`
  stands for any absolute path).
- cluster: needs what a laptop lacks (a Kubeflow server, Docker, kubectl, a remote tracking
  server or Beam cluster); its seqrank commands are parsed by the CLI (every option must exist),
  nothing runs.
- bench: sized for minutes of measurement (`make bench` runs them); parsed like cluster blocks,
  and `python -m MODULE --flag` lines must name flags the module's --help lists.
- layout: a tree of the repository; the first word of each unindented line must exist.
- state: a tree of the state dir; each first word (`<x>` for any name) must be in a run's.
- config: a YAML fragment of the config; merged into the default config it must validate.
- request: a JSON body of `POST /v1/rank`; the service's request model must accept it.
- python: run as a script.
- text: not commands (a diagram, a formula, a log excerpt); nothing to run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

KINDS = ("commands", "output", "cluster", "bench", "layout", "state", "config", "request", "python", "text")
_MARK = re.compile(r"^<!--\s*doc:\s*(?P<kind>[a-z]+)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    kind: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with its kind (ValueError for an unknown one)."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        info = lines[i][3:].strip()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        mark = _MARK.match(lines[i - 1]) if i else None
        kind = mark["kind"] if mark else ("python" if info == "python" else "commands")
        if kind not in KINDS:
            raise ValueError(f"{path.name}:{i + 1}: unknown doc block kind {kind!r}; one of {KINDS}")
        found.append(Block(path, i + 1, kind, "\n".join(lines[i + 1 : end])))
        i = end + 1
    return found


def commands(text: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comments and blank lines dropped."""
    joined, current = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if current:
            current += " " + line.strip()
        elif line.strip() and not line.lstrip().startswith("#"):
            current = line.strip()
        if current and not current.endswith("\\"):
            joined.append(current)
            current = ""
        elif current:
            current = current[:-1].rstrip()
    return [_without_comment(command) for command in joined]


def _without_comment(command: str) -> str:
    """`cmd --flag  # says why` → `cmd --flag`: a `#` after whitespace and outside quotes."""
    quote = ""
    for i, char in enumerate(command):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or command[i - 1].isspace()):
            return command[:i].rstrip()
    return command


def transcript(text: str) -> list[tuple[str, list[str]]]:
    """An output block's `$ command` lines, each with the lines printed after it."""
    pairs: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:].strip(), []))
        elif pairs:
            pairs[-1][1].append(line)
    return pairs


def printed_pattern(expected: str) -> re.Pattern[str]:
    """A regex for one printed line: `/path/to/` is any absolute directory, `...` anything."""
    escaped = re.escape(expected.strip())
    escaped = escaped.replace(re.escape("/path/to/"), r"/(?:\S*/)?").replace(re.escape("..."), ".*")
    return re.compile(escaped)
