"""Code-repository QA.

- ``longbench-codeqa``: the LongBench v2 "Code repo QA" items in the bench data folder
  (``longbench2-codeqa/sample_*.md`` with ``*_context.txt``): four-choice questions over a
  repository dump, scored on the extracted letter. The items keep their own sizes (about 27K to
  850K tokens), so ``--lengths`` does not apply; they are grouped by LongBench's own length
  class (short, medium, long).
- ``codeqa-docstring``: generated questions over the source of Python's standard library
  packages (pinned by the interpreter's version, recorded in each task), with every docstring
  removed from the code: "which function does this docstring describe?". Functions are asked
  about only when their name is unique in the files given, so the answer is unique.
"""

from __future__ import annotations

import ast
import random
import re
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from recursa.bench.data import require_data
from recursa.bench.tasks import Benchmark, Task, length_label, register, target_chars
from recursa.errors import ConfigError
from recursa.limits import approx_tokens

__all__ = ["LongBenchItem", "load_longbench", "strip_docstrings"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


LONGBENCH_DIR = "longbench2-codeqa"
_SECTION = re.compile(r"^# (\w+)\s*$", re.MULTILINE)
_CHOICE = re.compile(r"^- ([A-D]): (.*)$", re.MULTILINE)
_META = re.compile(r"^- (\w+): (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class LongBenchItem:
    name: str
    question: str
    choices: dict[str, str]
    answer: str
    meta: dict[str, str]
    context_path: Path


def _sections(text: str) -> dict[str, str]:
    parts = _SECTION.split(text)
    return {parts[i].lower(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}


def load_longbench(folder: Path) -> list[LongBenchItem]:
    """Every item in ``folder`` (``sample_*.md`` beside ``sample_*_context.txt``), by name."""
    items = []
    for md in sorted(folder.glob("sample_*.md")):
        sec = _sections(md.read_text(encoding="utf-8"))
        choices = dict(_CHOICE.findall(sec.get("choices", "")))
        answer = sec.get("answer", "").strip()[:1]
        ctx = md.with_name(md.stem + "_context.txt")
        if (
            not sec.get("question")
            or len(choices) != 4
            or answer not in choices
            or not ctx.exists()
        ):
            raise ConfigError(
                f"{md}: not a LongBench v2 item (question, 4 choices, answer, context)"
            )
        meta = dict(_META.findall(sec.get("metadata", "")))
        items.append(LongBenchItem(md.stem, sec["question"], choices, answer, meta, ctx))
    if not items:
        raise ConfigError(f"{folder} holds no LongBench v2 items (sample_*.md)")
    return items


def _longbench_question(item: LongBenchItem) -> str:
    choices = "\n".join(f"({k}) {v}" for k, v in sorted(item.choices.items()))
    return (
        f"What is the correct answer to this question: {item.question}\nChoices:\n{choices}\n\n"
        'Format your response as follows: "The correct answer is (insert answer here)".'
    )


def longbench_tasks(length: int, n: int, seed: int, data_dir: Path | None) -> list[Task]:
    folder = require_data(data_dir, LONGBENCH_DIR, "longbench-codeqa")
    items = sorted(load_longbench(folder), key=lambda it: it.context_path.stat().st_size)
    tasks = []
    for item in items[:n]:
        context = item.context_path.read_text(encoding="utf-8", errors="replace")
        tasks.append(
            Task(
                benchmark="longbench-codeqa",
                task_id=f"longbench-{item.name}",
                length=approx_tokens(len(context)),
                question=_longbench_question(item),
                context=context,
                gold=item.answer,
                scoring="choice",
                window=f"longbench-{item.name}",
                query=item.question,
                meta={"difficulty": item.meta.get("Difficulty", ""), "id": item.meta.get("ID", "")},
                length_label=item.meta.get("Length", "") or "",
            )
        )
    return tasks


# ---- docstring questions over the standard library -------------------------------------------

_PACKAGES = _words(
    "json email http logging asyncio concurrent importlib xml urllib unittest "
    "multiprocessing tomllib zoneinfo sqlite3 wsgiref html dbm ctypes curses"
)


def _source_files() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for pkg in _PACKAGES:
        base = root / pkg
        for path in sorted(base.rglob("*.py")) if base.is_dir() else []:
            rel = path.relative_to(root).as_posix()
            if "/test" not in rel and "/__pycache__/" not in rel:
                out.append((rel, path))
    return out


_DocNode = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def _doc_nodes(tree: ast.Module) -> list[tuple[_DocNode, ast.Expr]]:
    out: list[tuple[_DocNode, ast.Expr]] = []
    for node in ast.walk(tree):
        if isinstance(node, _DocNode):
            body = node.body
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                out.append((node, first))
    return out


def strip_docstrings(source: str) -> tuple[str, dict[str, str]]:
    """``source`` without docstrings (each becomes ``...``), and the functions' docstrings by
    qualified name. Docstrings written on the ``def`` line are left out of both."""
    tree = ast.parse(source)
    parents: dict[ast.AST, str] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                prefix = parents.get(node, "")
                parents[child] = f"{prefix}.{child.name}" if prefix else child.name
    # Split on "\n" only, as the parser counts lines (splitlines() also splits on form feeds).
    lines = re.findall(r"[^\n]*\n|[^\n]+$", source)
    docs: dict[str, str] = {}
    for node, expr in sorted(_doc_nodes(tree), key=lambda x: -x[1].lineno):
        if not isinstance(node, ast.Module) and expr.lineno == node.lineno:
            continue
        start, end = expr.lineno - 1, (expr.end_lineno or expr.lineno)
        # \s* matches every string, so there is always a match
        indent = re.match(r"\s*", lines[start]).group(0)  # type: ignore[union-attr]
        lines[start:end] = [f"{indent}...\n"]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            docs[parents[node]] = ast.get_docstring(node) or ""
    return "".join(lines), docs


def docstring_tasks(length: int, n: int, seed: int, data_dir: Path | None) -> list[Task]:
    files: dict[str, str] = {}
    found: list[tuple[str, str, str]] = []  # (module, qualname, docstring)
    budget = target_chars(length)
    size = 0
    for rel, path in _source_files():
        if size >= budget:
            break
        try:
            code, docs = strip_docstrings(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        files[rel] = code
        size += len(code)
        module = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        found += [(module, q, d) for q, d in docs.items()]
    if not files:
        raise ConfigError("no standard-library source found for codeqa-docstring")
    names = Counter(q.rsplit(".", 1)[-1] for _, q, _ in found)
    usable = [f for f in found if names[f[1].rsplit(".", 1)[-1]] == 1 and 60 <= len(f[2]) <= 800]
    rng = random.Random(f"codeqa-docstring:{length}:{seed}")
    picked = rng.sample(usable, min(n, len(usable)))
    label = length_label(length)
    tasks = []
    for i, (module, qual, doc) in enumerate(picked):
        question = (
            "The docstrings were removed from the Python source code in the context. Which "
            f'function or method does this docstring describe?\n\n"""\n{doc}\n"""\n\n'
            "Answer with its name as module.function or module.Class.method "
            "(for example json.decoder.JSONDecoder.decode)."
        )
        tasks.append(
            Task(
                benchmark="codeqa-docstring",
                task_id=f"docstring-{label}-s{seed}-{i:03d}",
                length=length,
                question=question,
                context=files,
                gold=[f"{module}.{qual}", qual, qual.rsplit(".", 1)[-1]],
                scoring="aliases",
                window=f"docstring-{label}-s{seed}",
                query=doc,
                meta={"python": sys.version.split()[0], "files": len(files)},
            )
        )
    return tasks


register(
    Benchmark(
        "longbench-codeqa",
        "LongBench v2 code-repository QA (four choices; items keep their own lengths)",
        longbench_tasks,
        needs_data=True,
        fixed_lengths=True,
    )
)
register(
    Benchmark(
        "codeqa-docstring",
        "which stdlib function does this docstring describe (docstrings stripped from the code)",
        docstring_tasks,
    )
)
