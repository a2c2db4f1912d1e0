"""Reading the root model's replies: code blocks, and final answers written outside them.

Models run code in ```` ```repl ```` blocks (```` ```python ```` and ```` ```py ```` are accepted
too). Small models often also write ``FINAL(answer)`` as plain text instead of calling it in
code; :func:`find_final` finds that robustly: nested parentheses, quoted strings containing
parentheses, multi-line answers, and prose with apostrophes ("FINAL(It's 42)").
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

__all__ = ["FinalText", "find_code_blocks", "find_final", "strip_code_blocks"]

_CODE_LANGS = frozenset({"repl", "python", "py", "python3"})
_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(?P<lang>[\w+.-]*)[^\n]*\n(?P<body>.*?)^[ \t]*```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)
_OPEN_FENCE_AT_END = re.compile(
    r"^[ \t]*```[ \t]*(?:repl|python|py|python3)[ \t]*\n(?P<body>(?:(?!^[ \t]*```).)*)\Z",
    re.DOTALL | re.MULTILINE | re.IGNORECASE,
)
_ANY_FENCE = re.compile(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
# FINAL must open a line (markdown emphasis, quotes and bullets before it are allowed), so prose
# such as "I will call FINAL(answer) when done" is not taken for an answer.
_FINAL_START = re.compile(r"^[ \t>*_`-]*(?P<kind>FINAL_VAR|FINAL)\s*\(", re.MULTILINE)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING_START = re.compile(r"\s*(?:[rRbBuUfF]{0,2})[\"']")


def find_code_blocks(text: str) -> list[str]:
    """Code of every ``repl``/``python`` block, in order, dedented.

    Blocks with another language tag (```` ```json ````) are not code to run. An unclosed block
    at the very end (the model was cut off) is taken as it is.
    """
    blocks: list[str] = []
    end = 0
    for m in _FENCE.finditer(text):
        end = m.end()
        if m.group("lang").lower() not in _CODE_LANGS:
            continue
        code = textwrap.dedent(m.group("body")).strip("\n")
        if code.strip():
            blocks.append(code)
    tail = _OPEN_FENCE_AT_END.search(text, end)
    if tail:
        code = textwrap.dedent(tail.group("body")).strip("\n")
        if code.strip():
            blocks.append(code)
    return blocks


def strip_code_blocks(text: str) -> str:
    """``text`` without any fenced blocks (so FINAL inside code is not read twice)."""
    text = _ANY_FENCE.sub("", text)
    return _OPEN_FENCE_AT_END.sub("", text)


@dataclass(frozen=True, slots=True)
class FinalText:
    """A ``FINAL(...)`` or ``FINAL_VAR(...)`` written outside code.

    ``arg`` is the raw text between the parentheses. :meth:`literal` gives the answer when the
    argument is a Python literal; :meth:`name` the variable a ``FINAL_VAR`` (or
    ``FINAL(some_var)``) refers to.
    """

    kind: str  # "FINAL" or "FINAL_VAR"
    arg: str

    def literal(self) -> str | None:
        try:
            value = ast.literal_eval(self.arg)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        return value if isinstance(value, str) else str(value)

    def name(self) -> str | None:
        if self.kind == "FINAL_VAR":
            lit = self.literal()
            candidate = lit if lit is not None else self.arg.strip()
        else:
            candidate = self.arg.strip()
        return candidate if _IDENT.fullmatch(candidate) else None

    def text(self) -> str:
        """The answer as plain text: the literal's value, or the raw argument unquoted."""
        lit = self.literal()
        if lit is not None:
            return lit
        raw = self.arg.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
            raw = raw[1:-1]
        return raw


def _scan(text: str, start: int, quotes: bool) -> int | None:
    """Index of the parenthesis closing the one before ``start``, or None."""
    depth = 1
    i = start
    quote: str | None = None
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if text.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
        elif quotes and c in "\"'":
            quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else c
            i += len(quote)
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def find_final(text: str) -> FinalText | None:
    """The last ``FINAL(...)``/``FINAL_VAR(...)`` opening a line outside code blocks, if any."""
    prose = strip_code_blocks(text)
    found: FinalText | None = None
    for m in _FINAL_START.finditer(prose):
        start = m.end()
        # A string literal argument may hold ")" inside its quotes, so scan it quote-aware.
        # Prose ("FINAL(It's 42)") must not be: its apostrophe would open a string that never
        # closes. Each mode falls back to the other, then to the last ")".
        quoted = _STRING_START.match(prose, start) is not None
        end = _scan(prose, start, quotes=quoted)
        if end is None:
            end = _scan(prose, start, quotes=not quoted)
        if end is None:
            last = prose.rfind(")")
            end = last if last >= start else len(prose)
        arg = prose[start:end].strip()
        if arg:
            found = FinalText(m.group("kind"), arg)
    return found
