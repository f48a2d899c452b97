"""The inference runtime of the activation unit's heavy part: ONNX Runtime, or eager PyTorch.

After serving.scoring's rewrite, most of a DIN or SIM request is one subgraph of the activation
unit: the (B × D+1) @ (D+1 × L'·H₁) product with the user's kernel, a sigmoid, each hidden Linear
and sigmoid, and the H_k → 1 output. `benchmarks/bench_runtimes.py` times it: ONNX Runtime's CPU
provider runs it in 4.3–4.4 ms where eager PyTorch takes 5.5–6.5 ms (B = 500, L' = 50, one
thread), scores equal within 1.4e-7; docs/serving.md has the table. The session is built from the
unit's own trained weights when a bundle is loaded (`prepare`), with B and L' symbolic, so one
session serves every request. Eager PyTorch stays as the checked fallback: units with a non-
sigmoid activation, `serve.runtime: torch`, and the reference the tests compare against (1e-5).
"""

from __future__ import annotations

import logging
import weakref
from typing import Literal

import numpy as np
import torch

from training.layers import TargetAttention
from training.models import CtrModel

log = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "torch"]

# unit -> its session; weak, so a model dropped by a reload takes its sessions with it.
_SESSIONS: weakref.WeakKeyDictionary[TargetAttention, UnitSession] = weakref.WeakKeyDictionary()


class UnitSession:
    """An ONNX Runtime session of one sigmoid activation unit after its first product's kernel.

    Input query (B, D+1) and kernel (D+1, L'·H₁), both float32; output the scores (B, L').
    """

    def __init__(self, unit: TargetAttention, threads: int = 1) -> None:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        if unit.activation != "sigmoid":
            raise ValueError(f"activation {unit.activation!r}: only the sigmoid unit has an ONNX graph")
        hidden_1 = unit.first.weight.shape[0]
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
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spinning pool threads between requests: they would take the core other requests need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self._output = last

    def scores(self, query: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """(B, D+1), (D+1, L'·H₁) float32 → the unit's scores (B, L') as a tensor."""
        batch = query.shape[0]
        feeds = {"query": query.contiguous().numpy(), "kernel": kernel.contiguous().numpy()}
        [out] = self.session.run([self._output], feeds)
        return torch.from_numpy(out).view(batch, -1)


def session_of(unit: TargetAttention) -> UnitSession | None:
    """The unit's session when its model was prepared for ONNX Runtime, else None (eager)."""
    return _SESSIONS.get(unit)


def prepare(model: CtrModel, runtime: Runtime, threads: int = 1) -> int:
    """Build sessions for `model`'s sigmoid activation units (runtime "onnxruntime"), or drop
    them ("torch"); how many units got one. Float32 models only: the graph is float32."""
    units = [m for m in model.modules() if isinstance(m, TargetAttention)]
    for unit in units:
        _SESSIONS.pop(unit, None)
    if runtime == "torch":
        return 0
    built = 0
    for unit in units:
        if unit.activation != "sigmoid" or unit.first.weight.dtype != torch.float32:
            continue
        _SESSIONS[unit] = UnitSession(unit, threads)
        built += 1
    log.info("%s: %d of %d activation units on ONNX Runtime", model.spec.name, built, len(units))
    return built
