"""A layer as ONNX Runtime runs it inside a network: without the layout changes at its boundary.

On x86 ONNX Runtime's CPU provider computes convolutions in a blocked channel layout (NCHWc). A
network converts into it once and stays there from one convolution to the next; a layer file
measured alone converts its input in (`ReorderInput`) and its output back (`ReorderOutput`), a full
copy of each feature map. On autovit-xxs's 128x128 inverted residuals those copies were 7% of the
layer's time by ONNX Runtime's profiler (one process), time the layer does not cost inside a network. `without_boundary_reorders` saves the
layer's optimized graph with those two copies cut, taking and giving the blocked tensors; a residual
sum done after the output copy (the layer's own input added back) is done on the blocked tensors.
Anything else at the boundary is left as it is.

Inside a network the layout changes where a blocked convolution meets an op that has no blocked
kernel (a squeeze-excite gate, a channel shuffle, a transpose): `reorders` lists them from the graph
ONNX Runtime runs, and `reorder_graph` writes one alone, so a kernel predictor can sample and count them.
A Transpose between channels-first and channels-last next to a reorder is folded into it (`channels_last`:
ConvNeXt at width 1 runs 18 such reorders and 12 of its 32 Transposes).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NCHWC = "com.microsoft.nchwc"
ELEMENTWISE = {"Add", "Mul"}


def without_boundary_reorders(model: Path, out: Path, options) -> bool:
    """Write `model`'s optimized graph to `out` with its boundary reorders cut; False if it has none.

    `options` are the session options the device runs with (their optimization level decides
    whether the graph is blocked at all)."""
    import onnx

    graph_model = optimized_graph(model, options)
    g = graph_model.graph
    consumers: dict[str, list] = {}
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    renamed: dict[str, str] = {}  # boundary tensor -> its blocked replacement
    drop = []
    for x in g.input:
        users = consumers.get(x.name, [])
        reorder = [n for n in users if n.op_type == "ReorderInput" and n.domain == NCHWC]
        if len(reorder) != 1:
            continue
        others = [n for n in users if n is not reorder[0]]
        fixable = all(n.op_type in ELEMENTWISE and _unreordered(n, x.name, producer, consumers) for n in others)
        if not fixable:
            continue
        for n in others:  # a residual: the sum of the input and the reordered-back output, done blocked
            back = producer[next(i for i in n.input if i != x.name)]
            n.input[list(n.input).index(back.output[0])] = back.input[0]
            n.input[list(n.input).index(x.name)] = reorder[0].output[0]
            drop.append(back)
        renamed[x.name] = reorder[0].output[0]
        drop.append(reorder[0])
    outputs = {}
    for y in g.output:
        node = producer.get(y.name)
        if node is not None and node.op_type == "ReorderOutput" and node.domain == NCHWC:
            outputs[y.name] = node.input[0]
            drop.append(node)
    if not drop:
        return False
    shapes = _shapes(graph_model, [*renamed.values(), *outputs.values(), *[y.name for y in g.output]])
    for n in drop:
        g.node.remove(n)
    for x in list(g.input):
        if x.name in renamed:
            g.input.remove(x)
            g.input.append(onnx.helper.make_tensor_value_info(renamed[x.name], onnx.TensorProto.FLOAT,
                                                              shapes[renamed[x.name]]))
    for y in list(g.output):
        name = outputs.get(y.name, y.name)
        g.output.remove(y)
        g.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shapes[name]))
    onnx.save(graph_model, str(out))
    return True


@dataclass(frozen=True)
class Reorder:
    """One layout change: into the blocked layout (`out` 0) or back out of it (1), of a c x hw x hw map;
    `last` 1 where the unblocked side is channels-last (NHWC: the runtime folded a Transpose into it)."""

    c: int
    hw: int
    out: int
    last: int = 0


def optimized_graph(model: Path, options):
    """The graph ONNX Runtime runs for `model` under `options` (its blocked convolutions and reorders)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        options.optimized_model_filepath = str(out)
        options.log_severity_level = 3  # silences "a blocked graph runs on this machine only": so it is used
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        return onnx.load(str(out))


def reorders(model: Path, options) -> list[Reorder]:
    """The layout changes ONNX Runtime adds to `model` under `options`, in graph order."""
    graph_model = optimized_graph(model, options)
    nodes = [n for n in graph_model.graph.node
             if n.domain == NCHWC and n.op_type in ("ReorderInput", "ReorderOutput")]
    if not nodes:
        return []
    plain = [n.input[0] if n.op_type == "ReorderInput" else n.output[0] for n in nodes]  # the unblocked side
    inputs = {x.name: [d.dim_value for d in x.type.tensor_type.shape.dim] for x in graph_model.graph.input}
    shapes = {**_shapes(graph_model, [t for t in plain if t not in inputs]), **inputs}
    out = []
    for n, t in zip(nodes, plain):
        shape = shapes[t]
        last = int(any(a.name == "channels_last" and a.i for a in n.attribute))
        c, hw = (shape[-1], shape[1]) if last else (shape[1], shape[-1] if len(shape) == 4 else 1)
        out.append(Reorder(int(c), int(hw), int(n.op_type == "ReorderOutput"), last))
    return out


def reorder_graph(r: Reorder, path: Path) -> Path:
    """An ONNX file doing only the layout change `r` (the blocked side padded by the runtime)."""
    import onnx
    from onnx import TensorProto, helper

    def into(c: int):
        graph = helper.make_graph([helper.make_node("ReorderInput", ["plain"], ["blocked"], domain=NCHWC)], "reorder",
                                  [helper.make_tensor_value_info("plain", TensorProto.FLOAT, [1, c, r.hw, r.hw])],
                                  [helper.make_tensor_value_info("blocked", TensorProto.FLOAT, None)])
        return helper.make_model(graph, opset_imports=opsets)

    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(NCHWC, 1)]
    plain = helper.make_tensor_value_info("plain", TensorProto.FLOAT, [1, r.c, r.hw, r.hw])
    model = into(r.c)
    if r.out:  # the blocked map's shape (channels padded to the machine's block) from the runtime itself;
        # a map leaving the layout may have any channels, one entering it a multiple of 4
        shape = _shapes(into(-(-r.c // 4) * 4), ["blocked"])["blocked"]
        back = helper.make_node("ReorderOutput", ["blocked"], ["plain"], domain=NCHWC, channels=r.c)
        graph = helper.make_graph([back], "reorder", [helper.make_tensor_value_info("blocked", TensorProto.FLOAT,
                                                                                    shape)], [plain])
        model = helper.make_model(graph, opset_imports=opsets)
    onnx.save(model, str(path))
    return path


def _unreordered(node, x: str, producer: dict, consumers: dict) -> bool:
    """`node` combines graph input `x` with a ReorderOutput used by nothing else."""
    others = [i for i in node.input if i != x]
    if len(others) != 1 or others[0] not in producer:
        return False
    back = producer[others[0]]
    return back.op_type == "ReorderOutput" and back.domain == NCHWC and len(consumers.get(others[0], [])) == 1


def _shapes(graph_model, names: list[str]) -> dict[str, list[int]]:
    """Shapes of the named tensors, from one run of the optimized graph (blocked ones are padded)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(graph_model)
    # every output undeclared: a residual moved onto blocked tensors gives a padded output its old shape
    # does not match (ONNX Runtime warned "Error merging shape info")
    outputs = dict.fromkeys([*(o.name for o in probe.graph.output), *names])
    del probe.graph.output[:]
    for name in outputs:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros(i.shape, np.float32) for i in sess.get_inputs()}
    values = sess.run(None, feeds)
    return {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), values)}
