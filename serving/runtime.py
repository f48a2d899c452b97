"""The inference runtime of the scorers' heavy parts: ONNX Runtime, or eager PyTorch.

After serving.scoring's rewrite, most of a DIN or SIM request is one subgraph of the activation
unit: the product of every candidate with the user's kernel, a sigmoid, each hidden Linear
and sigmoid, and the H_k → 1 output. `benchmarks/bench_runtimes.py` times it: ONNX Runtime's CPU
provider runs it in 4.3–4.4 ms where eager PyTorch takes 5.5–6.5 ms (B = 500, L' = 50, one
thread, Intel), scores equal within 1.4e-7; docs/serving.md has the table. Most of the rest is the
model's MLP tower (Linear, Dice, Linear, Dice, Linear), which eager PyTorch ran in 0.8–1.9 ms at
500 candidates and ONNX Runtime in 0.7. The sessions are built from the model's own trained
weights when a bundle is loaded (`prepare`), with the batch symbolic, so one session serves every
request. Eager PyTorch stays as the checked fallback: units with a non-sigmoid activation,
towers with a layer the graph does not know, `serve.runtime: torch`, and the reference the tests
compare against (1e-5).

A request scored while no other is in flight (one client, a quiet service) runs these graphs on
several cores (`CoreShare`, `serve.unit_cores`); under load each request keeps to one, so
requests run side by side instead of contending for the same cores.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from training.layers import MLP, Dice, TargetAttention
from training.models import CtrModel

log = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "torch"]

# module -> its sessions; weak, so a model dropped by a reload takes its sessions with it.
_SESSIONS: weakref.WeakKeyDictionary[nn.Module, UnitSession | TowerSession] = weakref.WeakKeyDictionary()
# The share of the request being scored in this context (CoreShare.request sets it); None: one core.
_SHARE: ContextVar[CoreShare | None] = ContextVar("seqrank_core_share", default=None)
# Below these sizes a second core costs more in wake-ups than it saves: (candidate, behavior)
# pairs of an activation unit, candidates of a tower.
MIN_PARALLEL_PAIRS = 2_048
MIN_PARALLEL_ROWS = 256
OPSET = 17


class _Sessions:
    """One graph's ONNX Runtime sessions: one on one thread and, with `cores` > 1, one splitting
    the work over that many threads. MLAS partitions products by rows and columns and elementwise
    kernels by ranges, so each output is computed by the same instructions either way: the two
    give equal results, bit for bit."""

    def __init__(self, graph: Any, cores: int, min_parallel: int) -> None:
        import onnxruntime as ort
        from onnx import helper

        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]).SerializeToString()

        def session(threads: int) -> ort.InferenceSession:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # No spinning pool threads between requests: they would take the core other requests need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        self.one = session(1)
        self.parallel = session(cores) if cores > 1 else None
        self.min_parallel = min_parallel
        self.output = graph.output[0].name

    def run(self, feeds: dict[str, np.ndarray], work: int) -> np.ndarray:
        """The graph's output for `feeds`: on all the cores while the request is the only one in
        its process (`CoreShare`) and `work` is at least `min_parallel`, else on one."""
        session = self.one
        if self.parallel is not None and work >= self.min_parallel:
            share = _SHARE.get()
            if share is not None and share.alone():
                session = self.parallel
        [out] = session.run([self.output], feeds)
        return out


def _constant(value: torch.Tensor) -> np.ndarray:
    return value.detach().float().numpy().copy()


class UnitSession:
    """ONNX Runtime sessions of one sigmoid activation unit after its first product's kernel.

    Input query (B, D+1) and kernel (L', H₁, D+1), both float32; output the scores (B, L').

    The graph runs the unit transposed, one behavior at a time: hidden units × candidates,
    (L', H₁, D+1) @ (D+1, B), then (H₂, H₁) @ (L', H₁, B) and so on, and the output layer
    (1, H_k) @ (L', H_k, B). Candidates are the long side of every product, which suits MLAS's
    kernels: at B = 500, L' = 50 the (H₁ → H₂) layer ran in 1.87 ms against 2.3 as a
    (B·L', H₁) × (H₁, H₂) Gemm (H₂ = 40 fills its 16-wide column blocks unevenly), and the output
    layer in 0.07 against 0.32 ms as a one-column Gemm: the unit 4.9 → 4.3 ms on one thread.
    """

    def __init__(self, unit: TargetAttention, cores: int = 1) -> None:
        from onnx import TensorProto, helper, numpy_helper

        if unit.activation != "sigmoid":
            raise ValueError(f"activation {unit.activation!r}: only the sigmoid unit has an ONNX graph")
        constants: dict[str, np.ndarray] = {}
        nodes = [
            helper.make_node("MatMul", ["kernel", "query"], ["h0"]),  # (L', H₁, B)
            helper.make_node("Sigmoid", ["h0"], ["a0"]),
        ]
        last = "a0"
        for i, linear in enumerate([*unit.layers, unit.out], start=1):
            weight, bias = f"w{i}", f"b{i}"
            constants[weight] = _constant(linear.weight)  # (out, in)
            constants[bias] = _constant(linear.bias).reshape(-1, 1)  # (out, 1): one per row
            nodes += [
                helper.make_node("MatMul", [weight, last], [f"m{i}"]),  # (L', out, B)
                helper.make_node("Add", [f"m{i}", bias], [f"h{i}"]),
            ]
            last = f"h{i}"
            if linear is not unit.out:
                nodes.append(helper.make_node("Sigmoid", [last], [f"a{i}"]))
                last = f"a{i}"
        graph = helper.make_graph(
            nodes,
            "activation_unit",
            [
                helper.make_tensor_value_info("kernel", TensorProto.FLOAT, ["L", "H1", "D1"]),
                helper.make_tensor_value_info("query", TensorProto.FLOAT, ["D1", "B"]),
            ],
            [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["L", 1, "B"])],
            [numpy_helper.from_array(value, name) for name, value in constants.items()],
        )
        self.sessions = _Sessions(graph, cores, MIN_PARALLEL_PAIRS)

    def scores(self, query: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """(B, D+1), (L', H₁, D+1) float32 → the unit's scores (B, L') (a transposed view)."""
        batch, length = query.shape[0], kernel.shape[0]
        feeds = {"kernel": kernel.contiguous().numpy(), "query": query.t().contiguous().numpy()}
        out = self.sessions.run(feeds, batch * length)
        return torch.from_numpy(out).view(length, batch).t()


class TowerSession:
    """ONNX Runtime sessions of an MLP tower in eval mode: (B, F) float32 → (B, out).

    Linear layers are Gemms. Dice in eval mode is x · (α + p (1 − α)) with p the sigmoid of the
    running-statistics normalisation (x − μ) / √(σ² + ε), written as x · s + t with s and t
    computed once; dropout is the identity. A tower with any other layer has no graph
    (`ValueError`) and stays in eager PyTorch.
    """

    def __init__(self, tower: MLP, cores: int = 1) -> None:
        from onnx import TensorProto, helper, numpy_helper

        constants: dict[str, np.ndarray] = {}
        nodes = []
        last, width, out_width = "x", None, None
        for i, layer in enumerate(tower.net):
            if isinstance(layer, nn.Linear):
                constants[f"w{i}"], constants[f"b{i}"] = _constant(layer.weight), _constant(layer.bias)
                nodes.append(helper.make_node("Gemm", [last, f"w{i}", f"b{i}"], [f"h{i}"], transB=1))
                width = layer.in_features if width is None else width
                out_width, last = layer.out_features, f"h{i}"
            elif isinstance(layer, Dice):
                norm = layer.norm
                if norm.running_mean is None or norm.running_var is None:
                    raise ValueError("tower Dice without running statistics: no eval-mode graph")
                scale = torch.rsqrt(norm.running_var + norm.eps)
                constants[f"s{i}"] = _constant(scale)
                constants[f"t{i}"] = _constant(-norm.running_mean * scale)
                constants[f"a{i}"] = _constant(layer.alpha)
                constants[f"c{i}"] = _constant(1 - layer.alpha)
                nodes += [
                    helper.make_node("Mul", [last, f"s{i}"], [f"n{i}"]),
                    helper.make_node("Add", [f"n{i}", f"t{i}"], [f"z{i}"]),
                    helper.make_node("Sigmoid", [f"z{i}"], [f"p{i}"]),
                    helper.make_node("Mul", [f"p{i}", f"c{i}"], [f"q{i}"]),
                    helper.make_node("Add", [f"q{i}", f"a{i}"], [f"g{i}"]),  # α + p (1 − α)
                    helper.make_node("Mul", [last, f"g{i}"], [f"d{i}"]),
                ]
                last = f"d{i}"
            elif isinstance(layer, nn.ReLU | nn.Sigmoid):
                op = "Relu" if isinstance(layer, nn.ReLU) else "Sigmoid"
                nodes.append(helper.make_node(op, [last], [f"r{i}"]))
                last = f"r{i}"
            elif isinstance(layer, nn.PReLU):
                constants[f"slope{i}"] = _constant(layer.weight)
                nodes.append(helper.make_node("PRelu", [last, f"slope{i}"], [f"r{i}"]))
                last = f"r{i}"
            elif not isinstance(layer, nn.Dropout):  # dropout: the identity in eval mode
                raise ValueError(f"tower layer {type(layer).__name__}: no ONNX graph for it")
        if width is None:
            raise ValueError("tower without a Linear layer")
        graph = helper.make_graph(
            nodes,
            "tower",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", width])],
            [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["B", out_width])],
            [numpy_helper.from_array(value, name) for name, value in constants.items()],
        )
        self.sessions = _Sessions(graph, cores, MIN_PARALLEL_ROWS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) float32 → (B, out), as the tower's eval-mode forward."""
        return torch.from_numpy(self.sessions.run({"x": x.contiguous().numpy()}, x.shape[0]))


def session_of(unit: TargetAttention) -> UnitSession | None:
    """The unit's sessions when its model was prepared for ONNX Runtime, else None (eager)."""
    session = _SESSIONS.get(unit)
    return session if isinstance(session, UnitSession) else None


def tower(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    """`mlp(x)`, through its sessions when its model was prepared for ONNX Runtime."""
    session = _SESSIONS.get(mlp)
    return session.forward(x) if isinstance(session, TowerSession) else mlp(x)


def prepare(model: CtrModel, runtime: Runtime, cores: int = 1, with_tower: bool = False) -> int:
    """Build sessions for `model`'s sigmoid activation units and, `with_tower` (its scorer reads
    the tower through `tower`), its MLP tower `model.mlp` (runtime "onnxruntime"), or drop them
    ("torch"); how many modules got them. `cores`: the most a request in flight alone may use.
    Float32 models only: the graphs are float32."""
    units = [m for m in model.modules() if isinstance(m, TargetAttention)]
    mlp = getattr(model, "mlp", None)
    towers = [mlp] if isinstance(mlp, MLP) else []
    for module in [*units, *towers]:
        _SESSIONS.pop(module, None)  # a tower's too: an earlier call may have built it
    if runtime == "torch":
        return 0
    towers = towers if with_tower else []
    built = 0
    for unit in units:
        if unit.activation != "sigmoid" or unit.first.weight.dtype != torch.float32:
            continue
        _SESSIONS[unit] = UnitSession(unit, cores)
        built += 1
    for mlp in towers:
        if any(p.dtype != torch.float32 for p in mlp.parameters()) or mlp.training:
            continue
        try:
            _SESSIONS[mlp] = TowerSession(mlp, cores)
        except ValueError as err:
            log.info("%s: tower stays on PyTorch (%s)", model.spec.name, err)
            continue
        built += 1
    log.info(
        "%s: %d of %d activation units and towers on ONNX Runtime",
        model.spec.name,
        built,
        len(units) + len(towers),
    )
    return built


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, capped by the cgroup's CPU quota (a
    container's CPU limit, such as a KServe replica's `serve.cpu`, which the node's core count
    does not show), at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cpu_quota(cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _cpu_quota(cgroup: Path) -> float | None:
    """CPUs the cgroup's quota allows (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), None
    when there is no quota or no such file."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def default_unit_cores(workers: int) -> int:
    """The cores this process may use shared among the service's worker processes, at least one
    each."""
    return max(1, usable_cores() // workers)


class CoreShare:
    """The requests in flight in this process, so the sessions of a request that is the only one
    may use all `cores`, and one core otherwise.

    At one client the other cores of the machine are idle while a request is scored (SIM, 500
    candidates, 2 cores: the unit 5.3 → 2.8 ms). Under load every core already has a request:
    giving each request two threads there made them contend (SIM at 4 clients: 97 → 79
    requests/s), so each session asks, when it runs, whether another request is in flight (reading
    its features, scoring or answering) and then keeps to one core.
    """

    def __init__(self, cores: int) -> None:
        if cores < 1:
            raise ValueError(f"unit cores = {cores}: must be >= 1")
        self.cores = cores
        self._in_flight = 0
        self._lock = threading.Lock()

    def alone(self) -> bool:
        """Whether the asking request is the only one in flight (a read of one int: no lock)."""
        return self._in_flight == 1

    @contextmanager
    def request(self) -> Iterator[None]:
        """Handle one request inside this block; its sessions see this share."""
        with self._lock:
            self._in_flight += 1
        token = _SHARE.set(self)
        try:
            yield
        finally:
            _SHARE.reset(token)
            with self._lock:
                self._in_flight -= 1
