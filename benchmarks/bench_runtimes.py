"""Benchmark: the inference runtimes on the serving hot spot, DIN's activation unit over one history.

The subgraph is `serving.scoring.shared_attention` after its kernel is built: the (B × D+1) @
(D+1 × L'·H₁) product, a sigmoid, the (B·L', H₁) × (H₁, H₂) layer, a sigmoid and the H₂ → 1 output,
with the weights of a default-config DIN. It is timed in eager PyTorch, under `torch.compile`
(default and max-autotune, static shapes) and in ONNX Runtime through the graph the service
runs (`serving.runtime.UnitSession`, its input layout included), on one thread and on every core
as for a request alone in its process. Prints one JSON object of medians in ms and each
runtime's largest difference from eager.

    python -m benchmarks.bench_runtimes --candidates 500 --history 50
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from seqrank.config import ModelConfig


def _unit(seed: int) -> Any:
    """The activation unit of a default-config DIN (seeded weights)."""
    from training.models import ModelSpec, build_model, model_hparams

    torch.manual_seed(seed)
    cfg = ModelConfig(name="din")
    sizes = {"user": 100, "item": 1_000, "category": 50, "brand": 10}
    unit = build_model(ModelSpec("din", hparams=model_hparams(cfg), vocab_sizes=sizes)).eval().attention
    if unit.activation != "sigmoid" or len(unit.layers) != 1:
        raise SystemExit("the benchmark's graph assumes the default unit: sigmoid, two hidden layers")
    return unit


def _weights(unit: Any) -> dict[str, np.ndarray]:
    """The unit's layers as numpy arrays (H₁ = first hidden), and its D."""
    [second] = unit.layers
    return {
        "dim": np.array(unit.first.weight.shape[1] // 4),
        "w2": second.weight.detach().numpy().T.copy(),  # (H₁, H₂)
        "b2": second.bias.detach().numpy().copy(),
        "w3": unit.out.weight.detach().numpy().T.copy(),  # (H₂, 1)
        "b3": unit.out.bias.detach().numpy().copy(),
    }


def _timed(run: Callable[[], Any], repeats: int) -> float:
    for _ in range(10):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1e3, 3)


def benchmark_runtimes(
    candidates: int = 500, history: int = 50, threads: int = 1, repeats: int = 60, compile_modes: bool = True
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    unit = _unit(0)
    w = _weights(unit)
    rng = np.random.default_rng(0)
    dim = int(w["dim"])  # the unit's D: [item ⊕ category], 2 × embedding_dim
    kernel = (rng.standard_normal((dim + 1, history * w["w2"].shape[0])) * 0.3).astype(np.float32)
    query = rng.standard_normal((candidates, dim + 1)).astype(np.float32)
    t = {name: torch.from_numpy(value) for name, value in (("kernel", kernel), ("query", query))}
    t.update({name: torch.from_numpy(w[name]) for name in ("w2", "b2", "w3", "b3")})
    w2, w3 = t["w2"].t().contiguous(), t["w3"].t().contiguous()  # Linear's (out, in) layout

    def eager(query: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        hidden = torch.mm(query, kernel).view(candidates * history, -1).sigmoid()
        hidden = torch.nn.functional.linear(hidden, w2, t["b2"]).sigmoid()
        return torch.nn.functional.linear(hidden, w3, t["b3"]).view(candidates, history)

    result: dict[str, Any] = {"candidates": candidates, "history": history, "threads": threads}
    with torch.inference_mode():
        reference = eager(t["query"], t["kernel"])
        result["eager_ms"] = _timed(lambda: eager(t["query"], t["kernel"]), repeats)
        if compile_modes:
            for mode in ("default", "max-autotune"):
                compiled = torch.compile(eager, mode=mode, dynamic=False)
                started = time.perf_counter()
                out = compiled(t["query"], t["kernel"])
                result[f"compile_{mode}"] = {
                    "ms": _timed(lambda c=compiled: c(t["query"], t["kernel"]), repeats),
                    "compile_s": round(time.perf_counter() - started, 1),
                    "max_diff": float((out - reference).abs().max()),
                }
    # The served graph (serving.runtime.UnitSession) from the same weights, input layout included:
    # on one thread, and on every core as for a request alone in its process.
    from serving import runtime

    kernel_3d = t["kernel"].view(dim + 1, history, -1).permute(1, 2, 0).contiguous()  # (L', H₁, D+1)
    cores = runtime.usable_cores()
    served = runtime.UnitSession(unit, cores=cores)
    with torch.inference_mode():
        out = served.scores(t["query"], kernel_3d)
        result["onnxruntime"] = {
            "ms": _timed(lambda: served.scores(t["query"], kernel_3d), repeats),
            "max_diff": float((out - reference).abs().max()),
        }
        with runtime.CoreShare(cores).request():
            result["onnxruntime_alone"] = {
                "cores": cores,
                "ms": _timed(lambda: served.scores(t["query"], kernel_3d), repeats),
            }
    result["eager_ms_after"] = _timed(lambda: eager(t["query"], t["kernel"]), repeats)  # drift check
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--history", type=int, default=50, help="distinct real behaviors L'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to build)")
    args = parser.parse_args()
    print(
        json.dumps(
            benchmark_runtimes(args.candidates, args.history, args.threads, compile_modes=not args.no_compile)
        )
    )


if __name__ == "__main__":
    main()
