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
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

__all__ = ["PROFILES", "PromptProfile", "fill", "profile_for", "render", "render_text"]


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

    def system(self, *, context_hint: str, sub_calls: bool, sub_chars: int) -> str:
        if sub_calls:
            doc = fill(self.subcall_doc, sub_chars=f"{sub_chars:,}")
            method = render_text("subcall_method")
            # The example's chunk size is the sub model's (copyable code must be right).
            example = Template(self.subcall_example).safe_substitute(sub_chars_plain=sub_chars)
        else:
            doc, method, example = "", render_text("no_subcall_method"), ""
        return render(
            self.system_template,
            context_hint=context_hint,
            subcall_doc=doc,
            subcall_method=method,
            subcall_example=example,
        )

    def first_turn(self, *, question: str, metadata: str) -> str:
        return render(
            "first_turn", question=question, metadata=metadata, first_step=self.first_step
        )

    def unseen(self, answer: str) -> str:
        """The pushback for an answer no output has shown (``final_unseen`` filled in)."""
        return Template(self.final_unseen).safe_substitute(answer=answer)


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
