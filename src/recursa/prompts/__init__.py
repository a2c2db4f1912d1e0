"""Every text recursa writes to a model, as package data with one template syntax.

- ``*.md``: the system prompts and the first turn, rendered by :func:`render`;
- ``standard.toml`` / ``strict.toml``: a :class:`PromptProfile`, its declared flags and texts;
- ``messages.toml``: what the engine and the host write besides (cell output framing, batch
  error items...), rendered by :func:`render_text`.

Placeholders are ``${name}`` everywhere (:class:`string.Template`). The profiles:

- ``standard`` for capable API models: a short method and a worked example.
- ``strict`` for small local models: numbered rules, copyable examples, and the engine refuses
  an answer given before any code has run and asks again (measured: a 1.5B model otherwise
  answers from the preview or repeats one block forever).

:func:`profile_for` picks one from the model name; callers may name one explicitly.

A user's own system prompt (``RLM(system_prompt=...)``, ``--system-prompt FILE``) replaces the
profile's system text only: the profile's turn messages and rules stay. It may use the
placeholders the shipped system prompts use (:data:`SYSTEM_PLACEHOLDERS`), written ``${name}``:

- ``${context_hint}``: the context's type and size ("a list of 12,345 characters");
- ``${subcall_doc}``: the list of ``llm_query`` & co., with what one sub-call can read (empty
  when sub-calls are off);
- ``${subcall_method}``: the method step about sub-calls (or "solve it with code alone");
- ``${subcall_example}``: the profile's worked sub-call examples (empty when sub-calls are off);
- ``${tools_doc}``: the caller's tools, each with its signature and docstring (empty without
  tools; a prompt without it gets the list at its end).

Any other ``${name}`` is a :class:`~recursa.errors.ConfigError` naming these (a typo would
otherwise reach the model silently); ``$${name}`` writes a literal ``${name}``, and a ``$`` not
followed by ``{`` is kept as it is (prices, shell snippets).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template

from recursa.errors import ConfigError

__all__ = [
    "PROFILES",
    "SYSTEM_PLACEHOLDERS",
    "PromptProfile",
    "check_system_prompt",
    "fill",
    "profile_for",
    "read_prompt",
    "render",
    "render_text",
]

#: The ``${name}`` placeholders a user's system prompt may use (filled as the shipped ones are).
SYSTEM_PLACEHOLDERS = (
    "context_hint",
    "subcall_doc",
    "subcall_method",
    "subcall_example",
    "tools_doc",
)
#: The largest prompt file read (a system prompt or prologue is instructions, not a corpus).
MAX_PROMPT_BYTES = 1024 * 1024
# ${name}, or $${name} (a literal ${name}); a bare $ is left alone.
_PLACEHOLDER = re.compile(r"\$(\$?)\{([^{}]*)\}")


@cache
def _read(filename: str) -> str:
    return resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")


@cache
def _messages() -> dict[str, str]:
    return tomllib.loads(_read("messages.toml"))


@cache
def _compiled(text: str) -> Template:
    return Template(text)


def fill(text: str, **values: object) -> str:
    """Fill the ``${name}`` placeholders of ``text`` (the one template syntax of this package)."""
    return _compiled(text).substitute(values) if values or "$" in text else text


def render(name: str, **values: object) -> str:
    """Render the template ``name`` (a ``.md`` file in this package) with ``values``."""
    return fill(_read(f"{name}.md"), **values).strip()


def render_text(key: str, **values: object) -> str:
    """Render the message ``key`` of ``messages.toml`` (what the engine and the host write to
    models besides a profile's own texts)."""
    return fill(_messages()[key], **values)


@dataclass(frozen=True, slots=True)
class PromptProfile:
    """Templates and engine rules for one kind of root model (``standard.toml``,
    ``strict.toml``). Behaviour comes from the declared flags, never from the name:

    ``require_code_before_final``: refuse a FINAL given before any code ran, and send an answer
    back once when it appears in no output the model has seen.
    """

    name: str
    system_template: str
    require_code_before_final: bool
    first_step: str
    after_output: str
    no_code: str
    final_before_code: str
    final_unverified: str
    repeated_code: str
    final_turn: str
    # Said once when a FINAL's text appears in no output the model has seen (${answer}).
    final_unseen: str = ""
    # What the system prompt says about llm_query & co. (${sub_chars}), and a worked example
    # (${sub_chars_plain}: the chunk size as a Python literal).
    subcall_doc: str = ""
    subcall_example: str = ""

    @classmethod
    def load(cls, name: str) -> PromptProfile:
        """The profile defined by ``<name>.toml`` in this package."""
        data = tomllib.loads(_read(f"{name}.toml"))
        return cls(name=name, **data["flags"], **data["texts"])

    def system(
        self,
        *,
        context_hint: str,
        sub_calls: bool,
        sub_chars: int,
        template: str | None = None,
        tools: str = "",
    ) -> str:
        """The system prompt: the profile's, or ``template`` (a user's own, checked by
        :func:`check_system_prompt`) with the same placeholders filled. ``tools``: the tools'
        section (:func:`recursa.tools.tools_prompt`), at ``${tools_doc}``."""
        if sub_calls:
            doc = fill(self.subcall_doc, sub_chars=f"{sub_chars:,}")
            method = render_text("subcall_method")
            # The example's chunk size is the sub model's (copyable code must be right).
            example = Template(self.subcall_example).safe_substitute(sub_chars_plain=sub_chars)
        else:
            doc, method, example = "", render_text("no_subcall_method"), ""
        values = {
            "context_hint": context_hint,
            "subcall_doc": doc,
            "subcall_method": method,
            "subcall_example": example,
            "tools_doc": tools,
        }
        if template is not None:
            text = _fill_user(template, values).strip()
            # A tool the model is not told of is never called: a prompt without the
            # placeholder still lists them, at its end.
            return text if not tools or "${tools_doc}" in template else f"{text}\n\n{tools}"
        return render(self.system_template, **values)

    def first_turn(self, *, question: str, metadata: str) -> str:
        return render(
            "first_turn", question=question, metadata=metadata, first_step=self.first_step
        )

    def unseen(self, answer: str) -> str:
        """The pushback for an answer no output has shown (``final_unseen`` filled in)."""
        return Template(self.final_unseen).safe_substitute(answer=answer)


def _fill_user(text: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        escaped, name = m.group(1), m.group(2)
        if escaped:
            return "${" + name + "}"
        if name not in values:
            raise ConfigError(
                f"the system prompt uses ${{{name}}}, which recursa does not fill; the "
                f"placeholders are {', '.join('${' + n + '}' for n in SYSTEM_PLACEHOLDERS)} "
                f"(write $${{{name}}} for the literal text)"
            )
        return values[name]

    return _PLACEHOLDER.sub(one, text)


def check_system_prompt(text: str) -> str:
    """``text`` if it can be a system prompt: not blank, and every ``${name}`` in it is one of
    :data:`SYSTEM_PLACEHOLDERS`; else a :class:`ConfigError` saying what to change."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            "the system prompt is empty: give its text (or a file), or leave it unset for the "
            "profile's own"
        )
    _fill_user(text, dict.fromkeys(SYSTEM_PLACEHOLDERS, ""))
    return text


def read_prompt(source: str | Path, *, what: str = "prompt") -> str:
    """``source`` itself when it is a ``str``; the text of the file when it is a ``Path``
    (UTF-8, at most :data:`MAX_PROMPT_BYTES`), with a :class:`ConfigError` naming ``what``."""
    if isinstance(source, str):
        return source
    try:
        with open(Path(source).expanduser(), "rb") as f:
            data = f.read(MAX_PROMPT_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {source}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} file {source} is a folder: give a text file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {source}: {exc.strerror or exc}") from None
    if len(data) > MAX_PROMPT_BYTES:
        raise ConfigError(
            f"{what} file {source} is over {MAX_PROMPT_BYTES // 1024:,} KiB, too long for "
            "instructions: put large material in the context instead"
        )
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {source} is not UTF-8 text") from None


STANDARD = PromptProfile.load("standard")
STRICT = PromptProfile.load("strict")

PROFILES: dict[str, PromptProfile] = {"standard": STANDARD, "strict": STRICT}

# Parameter counts in model names: "qwen2.5-coder:1.5b", "Llama-3.2-3B-Instruct", "phi3:3.8b".
_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")
SMALL_MODEL_MAX_B = 8.0


def profile_for(model_name: str) -> PromptProfile:
    """``strict`` for local models and any model whose name says it has 8B parameters or fewer;
    ``standard`` otherwise."""
    provider = model_name.partition(":")[0] if ":" in model_name else ""
    if provider == "local":
        return STRICT
    sizes = [float(m) for m in _SIZE.findall(model_name)]
    if sizes and max(sizes) <= SMALL_MODEL_MAX_B:
        return STRICT
    return STANDARD
