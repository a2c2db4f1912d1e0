"""Prompt profiles: the system prompt and every message the engine writes to the root model.

Templates are package data (``*.md``) with ``${name}`` placeholders, rendered by
:func:`render`. A :class:`PromptProfile` bundles them with the engine rules that go with them:

- ``standard`` for capable API models: a short method and a worked example.
- ``strict`` for small local models: numbered rules, copyable examples, and the engine refuses
  an answer given before any code has run and asks again (measured: a 1.5B model otherwise
  answers from the preview or repeats one block forever).

:func:`profile_for` picks one from the model name; callers may name one explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

__all__ = ["PROFILES", "PromptProfile", "profile_for", "render"]


@cache
def _template(name: str) -> Template:
    text = resources.files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")
    return Template(text)


def render(name: str, **values: str) -> str:
    """Render the template ``name`` (a ``.md`` file in this package) with ``values``."""
    return _template(name).substitute(values).strip()


_SUBCALL_DOC = (
    "- `llm_query(prompt)`: ask a language model one question about a piece of text you put in "
    "the prompt; returns its answer as a string. It reads about ${sub_chars} characters at "
    "most, so give it chunks, not the whole context.\n"
    "- `llm_query_batched(prompts)`: many prompts at once, answered concurrently, in order. "
    "Far faster than calling `llm_query` in a loop.\n"
    "- `rlm_query(prompt, context)`: hand a sub-problem with its own large `context` to a "
    "helper that has its own REPL; returns its answer.\n"
)
_SUBCALL_DOC_STRICT = (
    "- `llm_query(prompt)`: ask a language model about a piece of text you put in the prompt "
    "(at most ${sub_chars} characters); returns its answer as a string. Use it only when the "
    "answer needs reading, not searching.\n"
    "- `llm_query_batched(prompts)`: the same for a list of prompts, faster than a loop.\n"
)
_SUBCALL_METHOD = (
    "3. Let sub-calls do what needs reading or judgment: split the context into chunks that fit "
    "a sub-call, ask about each with `llm_query_batched`, store the answers, then combine them "
    "in code. Keep each prompt self-contained: the helper sees only what you send it.\n"
)
_NO_SUBCALL_METHOD = (
    "3. There are no language-model helpers in this run: solve it with code alone.\n"
)
_SUBCALL_EXAMPLE = """
Example of asking about every chunk:
```repl
size = 50_000
chunks = [context[i:i + size] for i in range(0, len(context), size)]
prompts = [f"List every client id that hit a rate limit in:\\n{c}" for c in chunks]
answers = llm_query_batched(prompts)
print(answers[:3])
```
"""
_SUBCALL_EXAMPLE_STRICT = """
Question: Which parts of the text complain about the weather? (this needs reading)
```repl
size = ${sub_chars_plain}
chunks = [context[i:i + size] for i in range(0, len(context), size)]
q = "Does this text complain about the weather? Answer yes or no, then quote it.\\n"
answers = llm_query_batched([q + c for c in chunks])
for k, a in enumerate(answers):
    print(k, a[:150])
```
"""


@dataclass(frozen=True, slots=True)
class PromptProfile:
    """Templates and engine rules for one kind of root model."""

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
    # Said once when a FINAL's text appears in no output the model has seen ({answer}).
    final_unseen: str = ""

    def system(self, *, context_hint: str, sub_calls: bool, sub_chars: int) -> str:
        strict = self.name == "strict"
        if sub_calls:
            doc = Template(_SUBCALL_DOC_STRICT if strict else _SUBCALL_DOC).substitute(
                sub_chars=f"{sub_chars:,}"
            )
            method, example = (
                _SUBCALL_METHOD,
                (_SUBCALL_EXAMPLE_STRICT if strict else _SUBCALL_EXAMPLE),
            )
            # The strict example's chunk size is the sub model's (copyable code must be right).
            example = Template(example).safe_substitute(sub_chars_plain=str(sub_chars))
        else:
            doc, method, example = "", _NO_SUBCALL_METHOD, ""
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


STANDARD = PromptProfile(
    name="standard",
    system_template="standard_system",
    require_code_before_final=False,
    first_step=(
        "Start by writing a ```repl block that looks at the context. Do not answer yet: you have "
        "not seen the context."
    ),
    after_output=(
        "Continue. Write the next ```repl block, or call FINAL(answer) once the evidence above "
        "supports an answer."
    ),
    no_code=(
        "Your reply had no ```repl block and no FINAL(...). Write Python in a ```repl block to "
        "work on the context, or give the answer with FINAL(answer)."
    ),
    final_before_code=(
        "You answered before running any code, so the answer cannot rest on the context. Write "
        "a ```repl block that finds the evidence first."
    ),
    final_unverified=(
        "You wrote FINAL(...) in the same reply as code, before seeing that code's output. "
        "Check the output above; if it supports your answer, give FINAL(answer) again."
    ),
    repeated_code=(
        "You already ran exactly this code; its output is above and will not change. Do "
        "something different: search for other words, look at another part of the context, or "
        "give the answer with FINAL(answer) if the output already holds it."
    ),
    final_turn=(
        "You have no turns left. Give your best answer now, on one line: FINAL(your answer)."
    ),
)

STRICT = PromptProfile(
    name="strict",
    system_template="strict_system",
    require_code_before_final=True,
    first_step=(
        "Write one ```repl block. To find a fact, copy the code of the first example and "
        "search for the rarest word of this question instead of Whitfield (a name, an id, an "
        "unusual word, copied exactly)."
    ),
    after_output=(
        "Read the output above. If it contains the answer, reply with FINAL and the answer "
        "itself inside the quotes. If not, write one new ```repl block: search for another "
        "word of the question, or read the text in chunks with llm_query_batched if it is "
        "available."
    ),
    no_code=(
        "Your reply had no ```repl block. Reply with exactly one ```repl block of Python code."
    ),
    final_before_code=(
        "You have not run any code yet, so you cannot know the answer. Write one ```repl block "
        "that searches `context` first."
    ),
    final_unverified=(
        "You called FINAL before you saw the output. Read the output above. If it contains the "
        "answer, reply with FINAL and the answer itself inside the quotes."
    ),
    repeated_code=(
        "You ran this exact code before and got the same output: do not run it again. If the "
        "output contains the answer, reply with FINAL and the answer itself inside the quotes. "
        "Otherwise search for a different word of the question, or, when searching cannot "
        "answer it, read the text in chunks with llm_query_batched if it is available."
    ),
    final_turn=(
        "You have no turns left. Reply with one line: FINAL and your best answer inside the quotes."
    ),
    final_unseen=(
        'Your answer "{answer}" does not appear in any output so far, so nothing shows it is '
        "right. Write one ```repl block that searches `context` for it, or for another word of "
        "the question, and prints what it finds. Then answer."
    ),
)

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
