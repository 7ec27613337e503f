"""Run a bundle's ONNX graphs (evaluator, extractor, remote NN) as differentiable torch code.

Re-measuring attributions from a bundle needs gradients of the evaluator stored in it, and
onnxruntime gives none; refining a bundle's remote NN (refine_remote.py) trains the weights of its
remote.onnx and writes them back into the same graph. Written by hand because the maintained
converter (onnx2torch) requires torchvision, which does not import beside this project's pinned CPU
torch; the bundles' exported graphs use only the handful of ops below (torch.onnx.export of nets.py,
BatchNorm folded into Conv), and anything else is refused by name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b=None, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, **_):
    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        x = F.pad(x, (left, right, top, bottom))
        padding = 0
    else:
        padding = (top, left)
    return F.conv2d(x, w, b, tuple(strides), padding, tuple(dilations), group)


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, **_):
    a = a.t() if transA else a
    b = b.t() if transB else b
    y = alpha * (a @ b)
    return y if c is None else y + beta * c


def _clip(x, lo=None, hi=None, **_):
    return torch.clamp(x, None if lo is None else lo.item(), None if hi is None else hi.item())


def _flatten(x, *, axis=1, **_):
    return x.reshape(int(np.prod(x.shape[:axis])) if axis else 1, -1)


def _slice(x, starts, ends, axes=None, steps=None, **_):
    """ONNX Slice with unit steps (what torch.onnx.export writes for ``f[:, a:b]``); Python's slicing
    clamps out-of-range starts and ends as ONNX does."""
    if steps is not None and any(int(s) != 1 for s in steps.tolist()):
        raise ValueError(f"Slice with steps {steps.tolist()} is not supported by onnx_torch (only 1)")
    index = [slice(None)] * x.dim()
    for start, end, axis in zip(starts.tolist(), ends.tolist(),
                                range(len(starts)) if axes is None else axes.tolist()):
        index[axis] = slice(int(start), int(end))
    return x[tuple(index)]


def _reshape(x, shape, **_):
    dims = [x.shape[i] if int(d) == 0 else int(d) for i, d in enumerate(shape.tolist())]
    return x.reshape(dims)


_OPS = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda a, b, **_: a @ b,
    "Add": lambda a, b, **_: a + b,
    "Mul": lambda a, b, **_: a * b,
    "Relu": lambda x, **_: F.relu(x),
    "Clip": _clip,
    "GlobalAveragePool": lambda x, **_: x.mean(dim=(2, 3), keepdim=True),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Slice": _slice,
    "Identity": lambda x, **_: x,
}


# The inputs of these ops that hold learnable weights (the rest, e.g. Reshape's shape, stay constants).
_WEIGHT_INPUTS = {"Conv": (1, 2), "Gemm": (1, 2)}


class OnnxModule(nn.Module):
    """An ONNX graph with one input, executed node by node with torch ops: its first output, or the
    ``output`` named (a tuple of names: a tuple of tensors, e.g. device.onnx's two).

    ``trainable``: the Conv and Gemm weights and biases become parameters (``weight_names`` maps
    each parameter to its initializer), and :meth:`save` writes their current values into a copy
    of the graph. Exported graphs have BatchNorm folded into the convolutions, so what trains is
    the net without normalisation: keep learning rates low."""

    def __init__(self, path: str | Path, output: str | tuple[str, ...] | None = None, trainable: bool = False):
        super().__init__()
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        graph = model.graph
        self.path = str(path)
        unknown = sorted({n.op_type for n in graph.node} - set(_OPS) - {"Constant"})
        if unknown:
            raise ValueError(f"{path}: ONNX ops {unknown} are not supported by onnx_torch (only {sorted(_OPS)})")
        consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant":
                consts[n.output[0]] = torch.from_numpy(numpy_helper.to_array(_attrs(n)["value"]).copy())
        weights = {n.input[j] for n in graph.node for j in _WEIGHT_INPUTS.get(n.op_type, ())
                   if j < len(n.input) and n.input[j]} if trainable else set()
        self.weight_names: dict[str, str] = {}  # parameter -> initializer
        for i, (name, t) in enumerate(consts.items()):
            if name in weights and t.is_floating_point():
                self.register_parameter(f"c{i}", nn.Parameter(t))
                self.weight_names[f"c{i}"] = name
            else:
                self.register_buffer(f"c{i}", t)
        self._const_names = list(consts)
        self._nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node
                       if n.op_type != "Constant"]
        inputs = [i.name for i in graph.input if i.name not in consts]
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected one graph input, found {inputs}")
        self.input_name = inputs[0]
        produced = {o for n in graph.node for o in n.output}
        missing = [o for o in (output if isinstance(output, tuple) else (output,)) if o and o not in produced]
        if missing:
            raise ValueError(f"{path}: no output named {missing} (the graph's outputs: "
                             f"{[o.name for o in graph.output]})")
        self.output_name = output or graph.output[0].name

    def save(self, out: str | Path) -> None:
        """The source graph with every trainable weight replaced by its current value."""
        import onnx
        from onnx import numpy_helper

        model = onnx.load(self.path)
        current = {init: getattr(self, attr).detach().cpu().numpy() for attr, init in self.weight_names.items()}
        written = set()
        for t in model.graph.initializer:
            if t.name in current:
                t.CopyFrom(numpy_helper.from_array(current[t.name].astype(np.float32), t.name))
                written.add(t.name)
        if written != set(current):  # a weight held by a Constant node has no initializer to overwrite
            raise ValueError(f"{self.path}: weights {sorted(set(current) - written)} are not graph initializers")
        onnx.checker.check_model(model)
        onnx.save(model, str(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {name: getattr(self, f"c{i}") for i, name in enumerate(self._const_names)}
        env[self.input_name] = x
        for op, ins, outs, attrs in self._nodes:
            args = [env[name] if name else None for name in ins]
            env[outs[0]] = _OPS[op](*args, **attrs)
        if isinstance(self.output_name, tuple):
            return tuple(env[name] for name in self.output_name)
        return env[self.output_name]
