"""One llama context and what a call needs from it: the chat template, the prompt's tokens,
what the KV cache already holds, an abort switch, and the rule that ends a code turn.

Everything here runs on a loaded model's worker thread (:mod:`recursa.embedded.runtime`).
"""

from __future__ import annotations

import re
import threading
from typing import Any

__all__ = ["CODE_PREFILL", "LlamaContext", "SharedWeights", "StopAfterCode"]


# A conversation turn (the root's) is one code block: the reply is started with this, so the
# model cannot answer in prose, skip the code or mangle the fence (measured with a 1.5B model:
# at temperature 0 small prompt changes made it reply "```\nrepl\n```" and nothing else).
CODE_PREFILL = "```repl\n"

# A complete code block the engine would run; the root model is stopped right after it.
_CODE_BLOCK = re.compile(
    r"^[ \t]*```[ \t]*(?:repl|python|py|python3)\b[^\n]*\n.*?^[ \t]*```[ \t]*(?:\n|\Z)",
    re.DOTALL | re.MULTILINE | re.IGNORECASE,
)


class SharedWeights:
    """Lends one context's loaded weights to another Llama; closing it frees nothing."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def close(self) -> None:
        return None


class LlamaContext:
    """One llama context: its Llama object, chat formatter and abort hook."""

    def __init__(self, llama: Any, lib: Any) -> None:
        self.llama = llama
        self.abort = threading.Event()  # set: stop the call running now
        self._callback = lib.ggml_abort_callback(lambda _data: self.abort.is_set())
        lib.llama_set_abort_callback(llama.ctx, self._callback, None)  # keep _callback alive
        self.format = _chat_formatter(llama, lib)

    def tokens(self, messages: list[dict[str, str]], prefill: str = "") -> list[int]:
        """The prompt's tokens; ``prefill`` starts the reply (the model continues from it)."""
        prompt = self.format(messages=messages).prompt + prefill
        tokens: list[int] = self.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        return tokens

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading ``tokens`` the KV cache already holds (as llama.generate reuses)."""
        held = self.llama.input_ids[: self.llama.n_tokens].tolist()
        n = 0
        for a, b in zip(held, tokens, strict=False):
            if a != b:
                break
            n += 1
        return min(n, len(tokens) - 1)  # the last prompt token is always evaluated again

    def close(self) -> None:
        self.llama.close()


def _chat_formatter(llama: Any, lib: Any) -> Any:
    """The GGUF's own chat template (ChatML when it has none)."""
    from llama_cpp import llama_chat_format

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        template = _CHATML

    def text(token: int) -> str:
        raw: bytes = llama.detokenize([token], special=True)
        return raw.decode("utf-8", "replace")

    eos = text(llama.token_eos()) if llama.token_eos() != -1 else ""
    bos = text(llama.token_bos()) if llama.token_bos() != -1 else ""
    return llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)


_CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class StopAfterCode:
    """Stops generation once the reply holds one complete code block (the rest is never run)."""

    def __init__(self, llama: Any, prompt_len: int, prefill: str = "") -> None:
        self.llama = llama
        self.prompt_len = prompt_len
        self.prefill = prefill

    def __call__(self, input_ids: Any, _logits: Any) -> bool:
        generated = input_ids[self.prompt_len :]
        if len(generated) < 4:
            return False
        last = self.llama.detokenize([int(generated[-1])]).decode("utf-8", "replace")
        if "`" not in last and "\n" not in last:
            return False
        text = self.llama.detokenize([int(t) for t in generated]).decode("utf-8", "replace")
        return _CODE_BLOCK.search(self.prefill + text) is not None
