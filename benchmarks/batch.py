"""Throughput of ``recursa batch``: items per second against the fake server, local vs Ray.

Every item is a real RLM run (a sandbox process, a journal, two root turns against the fake
OpenAI-compatible server, each answered after ``--latency`` seconds), so an item cannot take
less than two latencies; the rest is recursa's (and Ray's) overhead per item.

    python benchmarks/batch.py --items 500 --latency 0.5 --executor local --workers 32
    python benchmarks/batch.py --items 500 --latency 0.5 --executor ray --nodes 2 --workers 32

``--executor ray`` starts a Ray cluster of ``--nodes`` nodes on this machine
(``ray.cluster_utils.Cluster``: a head and more raylets, each its own node, one CPU each) and
tears it down at the end. Printed, not asserted:

- items/s, and the scaling efficiency: items/s over the ideal ``workers / (2 * latency)``;
- overhead per item: its mean wall time minus the two latencies;
- peak memory (max RSS) of the driver process and of its largest child (a sandbox, locally).
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from recursa import RLM, Limits
from recursa.batch import batch
from recursa.testing import FakeLLMServer

MARK = "TURN-ONE-DONE"


def responder(messages: list[dict[str, str]]) -> str:
    if MARK in messages[-1]["content"]:
        return "```repl\nFINAL(answer)\n```"
    asked = re.search(r"ask-(\w+)", " ".join(m["content"] for m in messages))
    return f"```repl\nanswer = 'ans-{asked.group(1) if asked else '?'}'\nprint({MARK!r})\n```"


def items(n: int) -> list[dict[str, Any]]:
    text = "A line of context about nothing in particular.\n" * 50
    return [{"id": f"i{k}", "question": f"What is ask-i{k}?", "context": text} for k in range(n)]


def start_cluster(nodes: int) -> Any:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    return cluster


def run(args: argparse.Namespace) -> dict[str, Any]:
    cluster = start_cluster(args.nodes) if args.executor == "ray" else None
    try:
        with FakeLLMServer(responder=responder, latency_s=args.latency) as srv, \
                tempfile.TemporaryDirectory() as tmp:  # fmt: skip
            rlm = RLM(
                "openai:fake",
                base_url=srv.base_url,
                runs_root=Path(tmp) / "runs",
                limits=Limits(max_iterations=4),
            )
            started = time.perf_counter()
            results = list(
                batch(rlm, items(args.items), out=Path(tmp) / "r.jsonl",
                      executor=args.executor, workers=args.workers)
            )  # fmt: skip
            wall = time.perf_counter() - started
            requests = len(srv.completions())
    finally:
        if cluster is not None:
            import ray

            ray.shutdown()
            cluster.shutdown()
    per_item = [float(r.get("wall_time_s") or 0.0) for r in results if not r.get("error")]
    return {
        "wall": wall,
        "ok": len(per_item),
        "failed": len(results) - len(per_item),
        "requests": requests,
        "per_item": statistics.mean(per_item) if per_item else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--nodes", type=int, default=2, help="Ray nodes on this machine")
    args = p.parse_args()
    out = run(args)
    rate = out["ok"] / out["wall"]
    ideal = args.workers / (2 * args.latency)
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    where = f"ray, {args.nodes} nodes" if args.executor == "ray" else "local"
    print(
        f"executor: {where}; {args.items} items, {args.workers} in flight, "
        f"latency {args.latency:g}s (python {sys.version.split()[0]})"
    )
    print(f"  finished {out['ok']}, failed {out['failed']}, {out['requests']} requests "
          f"in {out['wall']:.1f}s")  # fmt: skip
    print(f"  throughput: {rate:.2f} items/s (ideal {ideal:.1f}: efficiency {rate / ideal:.0%})")
    print(f"  per item: {out['per_item']:.3f}s wall, overhead "
          f"{out['per_item'] - 2 * args.latency:.3f}s over two latencies")  # fmt: skip
    print(f"  peak RSS: driver {self_kib / 1024:.0f} MiB, largest child {child_kib / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
