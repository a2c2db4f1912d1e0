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
# Fenced blocks are found line by line, never by one regex over the whole reply: a reply full of
# fences that never close made a ```` ```.*?``` ```` search quadratic (a 112 KB reply took 42 s).
# A fence line starts, after spaces or tabs, with three backticks; it opens a block when a line
# follows it, and a bare one (nothing but spaces after the backticks) also closes a block.
_FENCE_LINE = re.compile(r"^[ \t]*```[^\n]*", re.MULTILINE)
_CLOSER_LINE = re.compile(r"^[ \t]*```[ \t]*$", re.MULTILINE)
_LANG = re.compile(r"[ \t]*```[ \t]*([\w+.-]*)")
_CODE_OPENER = re.compile(r"[ \t]*```[ \t]*(?:repl|python|py|python3)[ \t]*", re.IGNORECASE)
# FINAL must open a line (markdown emphasis, quotes and bullets before it are allowed), so prose
# such as "I will call FINAL(answer) when done" is not taken for an answer.
_FINAL_START = re.compile(r"^[ \t>*_`-]*(?P<kind>FINAL_VAR|FINAL)\s*\(", re.MULTILINE)
_PAREN = re.compile(r"[()]")
_PAREN_OR_QUOTE = re.compile(r"[()\"']")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING_START = re.compile(r"\s*(?:[rRbBuUfF]{0,2})[\"']")


@dataclass(frozen=True, slots=True)
class _Block:
    start: int  # where the opening fence line starts
    end: int  # where the closing fence line ends (before its newline)
    lang: str
    body: str


def _fences(text: str) -> tuple[list[_Block], int | None]:
    """The closed blocks in order, and where an unclosed code block at the very end starts.

    Each opening fence line takes the first bare fence line after it as its end; lines in
    between are its body. An opening line with no closing line after it ends the search (no
    later one can have one either), and what remains is a block cut off at the end when the last
    fence line is a ``repl``/``python`` opener. Every search starts where the last one ended,
    so the whole reply is read a bounded number of times.
    """
    blocks: list[_Block] = []
    pos = 0
    while (opener := _FENCE_LINE.search(text, pos)) is not None:
        closer = _CLOSER_LINE.search(text, opener.end() + 1)
        if closer is None:
            return blocks, _cut_off_block(text, opener.start())
        match = _LANG.match(text, opener.start(), opener.end())
        body = text[opener.end() + 1 : closer.start()]
        blocks.append(_Block(opener.start(), closer.end(), match.group(1) if match else "", body))
        pos = closer.end()
    return blocks, None


def _cut_off_block(text: str, start: int) -> int | None:
    """Where the last fence line (at or after ``start``) begins, if it opens a code block."""
    last = None
    for last in _FENCE_LINE.finditer(text, start):  # noqa: B007 - only the last one counts
        pass
    if last is None or last.end() >= len(text):  # an opener needs a line after it
        return None
    return last.start() if _CODE_OPENER.fullmatch(text, last.start(), last.end()) else None


def _code(body: str) -> str | None:
    code = textwrap.dedent(body).strip("\n")
    return code if code.strip() else None


def find_code_blocks(text: str) -> list[str]:
    """Code of every ``repl``/``python`` block, in order, dedented.

    Blocks with another language tag (```` ```json ````) are not code to run. An unclosed block
    at the very end (the model was cut off) is taken as it is. Linear in the reply's length.
    """
    blocks, tail = _fences(text)
    codes = [_code(b.body) for b in blocks if b.lang.lower() in _CODE_LANGS]
    if tail is not None:
        codes.append(_code(text[text.index("\n", tail) + 1 :]))
    return [c for c in codes if c is not None]


def strip_code_blocks(text: str) -> str:
    """``text`` without any fenced blocks (so FINAL inside code is not read twice)."""
    blocks, tail = _fences(text)
    out, at = [], 0
    for block in blocks:
        out.append(text[at : block.start])
        at = block.end
    out.append(text[at:] if tail is None else text[at:tail])
    return "".join(out)


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
    """Index of the parenthesis closing the one before ``start``, or None.

    Jumps from one parenthesis (or quote) to the next with C-speed searches rather than
    stepping through every character.
    """
    depth = 1
    stops = _PAREN_OR_QUOTE if quotes else _PAREN
    pos = start
    while True:
        for m in stops.finditer(text, pos):
            c = m.group()
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return m.start()
            else:  # a quote opens a string: go on after its end
                i = m.start()
                quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else c
                end = _string_end(text, i + len(quote), quote)
                if end is None:
                    return None
                pos = end
                break
        else:
            return None


def _string_end(text: str, i: int, quote: str) -> int | None:
    """Index just past the ``quote`` closing a string whose body starts at ``i``, or None.

    A backslash escapes the character after it. The next quote is looked up again only once
    the scan has passed it, so many backslashes before a distant quote stay linear.
    """
    close = text.find(quote, i)
    while close != -1:
        escape = text.find("\\", i, close)
        if escape == -1:
            return close + len(quote)
        i = escape + 2
        if i > close:
            close = text.find(quote, i)
    return None


def find_final(text: str) -> FinalText | None:
    """The last ``FINAL(...)``/``FINAL_VAR(...)`` opening a line outside code blocks, if any.

    Candidates are tried from the last one back, so a reply of many unclosed ``FINAL(`` lines
    costs one scan to its end, not one per line.
    """
    prose = strip_code_blocks(text)
    last_paren = prose.rfind(")")
    for m in reversed(list(_FINAL_START.finditer(prose))):
        start = m.end()
        # A string literal argument may hold ")" inside its quotes, so scan it quote-aware.
        # Prose ("FINAL(It's 42)") must not be: its apostrophe would open a string that never
        # closes. Each mode falls back to the other, then to the last ")".
        quoted = _STRING_START.match(prose, start) is not None
        end = _scan(prose, start, quotes=quoted)
        if end is None:
            end = _scan(prose, start, quotes=not quoted)
        if end is None:
            end = last_paren if last_paren >= start else len(prose)
        arg = prose[start:end].strip()
        if arg:
            return FinalText(m.group("kind"), arg)
    return None
