"""The README's code, found by its fences: Python blocks to run and `opusclip-track` command lines to parse."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language tag, first code line (1-based), nearest heading and text."""

    language: str
    line: int
    heading: str
    code: str

    @property
    def id(self) -> str:
        """`Section name:line`, so a failing parameter names the block."""
        words = re.sub(r"[^\w]+", "-", self.heading.lstrip("# ")).strip("-").lower()
        return f"{words}:{self.line}"


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README (or of `text`), in order."""
    text = README.read_text() if text is None else text
    found = []
    for match in _FENCE.finditer(text):
        before = text[:match.start()]
        headings = re.findall(r"^#{1,6} .*$", before, re.M)
        line = before.count("\n") + 2  # the fence is on the line before the code
        found.append(Block(match.group(1), line, headings[-1] if headings else "", match.group(2)))
    return found


def python_blocks(text: str | None = None) -> list[Block]:
    return [block for block in blocks(text) if block.language == "python"]


def command_lines(program: str, text: str | None = None) -> list[tuple[int, list[str]]]:
    """(README line, arguments) of every `program ...` command in a non-Python block or an inline code span.

    A `$ ` prompt is dropped, `# comments` and what follows `|`, `&&` or `;` are not part of the command,
    and `<placeholder>` words stay as they are (the parser sees a string, as it would see a real name).
    """
    text = README.read_text() if text is None else text
    candidates: list[tuple[int, str]] = []
    for block in blocks(text):
        if block.language != "python":
            candidates += [(block.line + i, line) for i, line in enumerate(block.code.splitlines())]
    prose = _FENCE.sub(lambda fence: "\n" * fence.group(0).count("\n"), text)  # same line numbers
    for match in re.finditer(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)", prose):  # a span may wrap once
        candidates.append((prose[:match.start()].count("\n") + 1, match.group(1).replace("\n", " ")))
    commands = []
    for line_no, line in candidates:
        line = line.strip().removeprefix("$ ")
        if not line.startswith(program + " "):
            continue
        words = shlex.split(line, comments=True)[1:]
        for i, word in enumerate(words):
            if word in ("|", "&&", ";", ">"):
                words = words[:i]
                break
        commands.append((line_no, words))
    return commands
