"""The inference runtime of the activation unit's heavy part: ONNX Runtime, or eager PyTorch.

After serving.scoring's rewrite, most of a DIN or SIM request is one subgraph of the activation
unit: the (B × D+1) @ (D+1 × L'·H₁) product with the user's kernel, a sigmoid, each hidden Linear
and sigmoid, and the H_k → 1 output. `benchmarks/bench_runtimes.py` times it: ONNX Runtime's CPU
provider runs it in 4.3–4.4 ms where eager PyTorch takes 5.5–6.5 ms (B = 500, L' = 50, one
thread), scores equal within 1.4e-7; docs/serving.md has the table. The session is built from the
unit's own trained weights when a bundle is loaded (`prepare`), with B and L' symbolic, so one
session serves every request. Eager PyTorch stays as the checked fallback: units with a non-
sigmoid activation, `serve.runtime: torch`, and the reference the tests compare against (1e-5).

A request scored while no other is (one client, a quiet service) may run its unit on several
cores (`CoreShare`, `serve.unit_threads`); under load each request keeps to one, so requests run
side by side instead of contending for the same cores.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import numpy as np
import torch

from training.layers import TargetAttention
from training.models import CtrModel

log = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "torch"]

# unit -> its session; weak, so a model dropped by a reload takes its sessions with it.
_SESSIONS: weakref.WeakKeyDictionary[TargetAttention, UnitSession] = weakref.WeakKeyDictionary()
# The share of the request being scored in this context (CoreShare.request sets it); None: one core.
_SHARE: ContextVar[CoreShare | None] = ContextVar("seqrank_core_share", default=None)
# Below this many (candidate, behavior) pairs a second core costs more in wake-ups than it saves.
MIN_PARALLEL_PAIRS = 2_048


class UnitSession:
    """ONNX Runtime sessions of one sigmoid activation unit after its first product's kernel.

    Input query (B, D+1) and kernel (D+1, L'·H₁), both float32; output the scores (B, L'). One
    session runs on one thread; with `cores` > 1 a second one splits a request's rows over that
    many threads (MLAS partitions the products by rows and columns, so each score is computed
    by the same instructions either way: the scores are equal, bit for bit).
    """

    def __init__(self, unit: TargetAttention, cores: int = 1) -> None:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        if unit.activation != "sigmoid":
            raise ValueError(f"activation {unit.activation!r}: only the sigmoid unit has an ONNX graph")
        hidden_1 = self._hidden_1 = unit.first.weight.shape[0]
        constants: dict[str, np.ndarray] = {"rows": np.array([-1, hidden_1], dtype=np.int64)}
        nodes = [
            helper.make_node("MatMul", ["query", "kernel"], ["h0"]),
            helper.make_node("Reshape", ["h0", "rows"], ["h0_rows"]),  # (B·L', H₁)
            helper.make_node("Sigmoid", ["h0_rows"], ["a0"]),
        ]
        last = "a0"
        for i, linear in enumerate([*unit.layers, unit.out], start=1):
            weight, bias = f"w{i}", f"b{i}"
            constants[weight] = linear.weight.detach().float().numpy().copy()  # (out, in)
            constants[bias] = linear.bias.detach().float().numpy().copy()
            nodes.append(helper.make_node("Gemm", [last, weight, bias], [f"h{i}"], transB=1))
            last = f"h{i}"
            if linear is not unit.out:
                nodes.append(helper.make_node("Sigmoid", [last], [f"a{i}"]))
                last = f"a{i}"
        graph = helper.make_graph(
            nodes,
            "activation_unit",
            [
                helper.make_tensor_value_info("query", TensorProto.FLOAT, ["B", "D1"]),
                helper.make_tensor_value_info("kernel", TensorProto.FLOAT, ["D1", "LH"]),
            ],
            [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["BL", 1])],
            [numpy_helper.from_array(value, name) for name, value in constants.items()],
        )
        graph_bytes = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

        def session(threads: int) -> ort.InferenceSession:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # No spinning pool threads between requests: they would take the core other requests need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(graph_bytes, options, providers=["CPUExecutionProvider"])

        self.session = session(1)
        self.cores = cores
        self.parallel = session(cores) if cores > 1 else None
        self._output = last

    def scores(self, query: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """(B, D+1), (D+1, L'·H₁) float32 → the unit's scores (B, L') as a tensor: on all the
        session's cores while the request is the only one in its process (`CoreShare`), else one."""
        batch, pairs = query.shape[0], query.shape[0] * kernel.shape[1] // self._hidden_1
        session = self.session
        if self.parallel is not None and pairs >= MIN_PARALLEL_PAIRS:
            share = _SHARE.get()
            if share is not None and share.alone():
                session = self.parallel
        feeds = {"query": query.contiguous().numpy(), "kernel": kernel.contiguous().numpy()}
        [out] = session.run([self._output], feeds)
        return torch.from_numpy(out).view(batch, -1)


def session_of(unit: TargetAttention) -> UnitSession | None:
    """The unit's session when its model was prepared for ONNX Runtime, else None (eager)."""
    return _SESSIONS.get(unit)


def prepare(model: CtrModel, runtime: Runtime, cores: int = 1) -> int:
    """Build sessions for `model`'s sigmoid activation units (runtime "onnxruntime"), or drop
    them ("torch"); how many units got one. `cores`: the most a request scored alone may use.
    Float32 models only: the graph is float32."""
    units = [m for m in model.modules() if isinstance(m, TargetAttention)]
    for unit in units:
        _SESSIONS.pop(unit, None)
    if runtime == "torch":
        return 0
    built = 0
    for unit in units:
        if unit.activation != "sigmoid" or unit.first.weight.dtype != torch.float32:
            continue
        _SESSIONS[unit] = UnitSession(unit, cores)
        built += 1
    log.info("%s: %d of %d activation units on ONNX Runtime", model.spec.name, built, len(units))
    return built


def default_unit_cores(workers: int) -> int:
    """The machine's cores shared among the service's worker processes, at least one each."""
    return max(1, (os.cpu_count() or 1) // workers)


class CoreShare:
    """The requests in flight in this process, so the activation unit of a request that is the
    only one may use all `cores`, and one core otherwise.

    At one client the other cores of the machine are idle while a request is scored (SIM, 500
    candidates, 2 cores: the unit 5.3 → 2.8 ms). Under load every core already has a request:
    giving each request two threads there made them contend (SIM at 4 clients: 97 → 79
    requests/s), so the unit asks, when it runs, whether another request is in flight (reading
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
        """Handle one request inside this block; its units see this share."""
        with self._lock:
            self._in_flight += 1
        token = _SHARE.set(self)
        try:
            yield
        finally:
            _SHARE.reset(token)
            with self._lock:
                self._in_flight -= 1
