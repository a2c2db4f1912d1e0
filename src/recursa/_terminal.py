"""Text safe to show on a terminal: model-written text is untrusted, and a terminal obeys the
escape sequences in what it prints (OSC 52 writes the clipboard, OSC 0 the window title, CSI
moves the cursor over earlier output)."""

from __future__ import annotations

import re

__all__ = ["terminal_safe"]

# Terminal control sequences: OSC (window titles, OSC 52 clipboard writes, hyperlinks), DCS/PM/
# APC strings, CSI (cursor moves, erasing, colours), other ESC sequences, C1 controls (8-bit
# CSI/OSC), and C0 controls but tab and newline (carriage return and backspace overwrite
# what was printed). Each alternative is linear: no nested repetition.
_CONTROL = re.compile(
    r"(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b[P^_X]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -/]*[0-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def terminal_safe(text: str) -> str:
    """``text`` without terminal control sequences or control characters (``\\n`` and
    ``\\t`` stay), for showing model-written text on a terminal."""
    return _CONTROL.sub("", text)
