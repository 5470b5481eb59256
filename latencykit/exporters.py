"""TFLite and Core ML exporters; `latencykit.export` registers them in `EXPORTERS` next to ONNX.

Both are cached by content through `ExportCache`, like ONNX. Each export is checked before it is
cached: a TFLite file is run with the LiteRT interpreter and must match the torch output; a Core ML
package is checked for structure everywhere (an ML program whose inputs and outputs have the torch
shapes) and for outputs only on macOS, the one place its runtime exists. The converters are heavy,
so they are imported only when a file of their format is first asked for.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from latencykit.quiet import silenced
from latencykit.errors import LatencykitError

# TFLite runs fp32 (XNNPACK); Core ML ML programs compute in fp16 by default, as on an iPhone.
TFLITE_TOLERANCE = 1e-3
COREML_TOLERANCE = 5e-2
COREML_TARGET = "iOS16"


class ExportCheckError(LatencykitError):
    """An exported file that does not compute what the torch module computes."""


def _missing(extra: str, exc: ImportError) -> LatencykitError:
    return LatencykitError(f"{extra} export needs its extra: pip install 'latencykit[{extra}]' ({exc})")


def torch_outputs(module: torch.nn.Module, inputs: tuple) -> list[np.ndarray]:
    with torch.no_grad():
        out = module.eval()(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().cpu().numpy() for o in outs]


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference, relative to the reference's magnitude (at least 1)."""
    if got.shape != want.shape:
        return float("inf")
    return float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))


def export_tflite(module: torch.nn.Module, inputs: tuple, path: Path) -> None:
    """litert-torch conversion (fp32), then a check against torch with the LiteRT interpreter."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    with silenced():
        try:
            import litert_torch
        except ImportError as exc:
            raise _missing("tflite", exc) from exc
        edge = litert_torch.convert(module.eval(), inputs)
        edge.export(str(path))
    check_tflite(path, module, inputs)


class ChannelsLastIO(torch.nn.Module):
    """`inner` taking the inputs and giving the outputs at `maps_in` / `maps_out` channels-last (NHWC).

    litert-torch's converter cancels these permutes against the transposes it would put at the
    boundary (`litert_torch.to_channel_last_io` does the same, but importing the converter takes
    10-15 s, which every cached layer lookup would pay)."""

    def __init__(self, inner: torch.nn.Module, maps_in: Sequence[int], maps_out: Sequence[int]) -> None:
        super().__init__()
        self.inner, self.maps_in, self.maps_out = inner, tuple(maps_in), tuple(maps_out)

    def extra_repr(self) -> str:
        return f"maps_in={self.maps_in}, maps_out={self.maps_out}"

    def forward(self, *xs: torch.Tensor):
        out = self.inner(*(x.permute(0, 3, 1, 2) if i in self.maps_in else x for i, x in enumerate(xs)))
        single = not isinstance(out, (tuple, list))
        outs = [o.permute(0, 2, 3, 1) if i in self.maps_out else o for i, o in enumerate([out] if single else out)]
        return outs[0] if single else tuple(outs)


def channels_last_io(module: torch.nn.Module, inputs: tuple) -> tuple[torch.nn.Module, tuple]:
    """`module` taking and giving its feature maps (4-D tensors) channels-last, with inputs to match.

    LiteRT computes feature maps channels-last (NHWC). A whole network converted from torch's
    channels-first layout transposes once, at its input; a layer converted alone would transpose its
    input and output too, and on autovit-xxs's 128x128 inverted residuals those two transposes were
    15% of the layer's time on host-litert (one process), time no layer pays inside a network."""
    maps_in = [i for i, t in enumerate(inputs) if t.dim() == 4]
    maps_out = [i for i, o in enumerate(torch_outputs(module, inputs)) if o.ndim == 4]
    if not maps_in and not maps_out:
        return module, inputs
    nhwc = tuple(t.permute(0, 2, 3, 1).contiguous() if i in maps_in else t for i, t in enumerate(inputs))
    return ChannelsLastIO(module, maps_in, maps_out), nhwc


def check_tflite(path: Path, module: torch.nn.Module, inputs: tuple) -> float:
    """The file's relative error against torch on `inputs`; raises above TFLITE_TOLERANCE."""
    from latencykit.tflite_runtime import run_tflite

    got = run_tflite(path, [t.numpy() for t in inputs])
    want = torch_outputs(module, inputs)
    if len(got) != len(want):
        raise ExportCheckError(f"{path.name}: {len(got)} outputs, torch has {len(want)}")
    err = max(relative_error(g, w) for g, w in zip(got, want))
    if not err <= TFLITE_TOLERANCE:
        raise ExportCheckError(f"{path.name}: LiteRT output differs from torch (relative error {err:.2g})")
    return err


def export_coreml(module: torch.nn.Module, inputs: tuple, path: Path) -> None:
    """coremltools from a `torch.export` program (ATen dialect) to an ML program package."""
    with silenced():
        try:
            import coremltools as ct
        except ImportError as exc:
            raise _missing("coreml", exc) from exc
    program = torch.export.export(module.eval(), inputs).run_decompositions({})
    with silenced():
        model = ct.convert(program, convert_to="mlprogram",
                           minimum_deployment_target=getattr(ct.target, COREML_TARGET))
        model.save(str(path))
    check_coreml(path, module, inputs)


def check_coreml(path: Path, module: torch.nn.Module, inputs: tuple) -> dict:
    """Structure everywhere: an ML program whose inputs have the torch shapes and whose outputs
    have the torch count (and shapes, where the spec records them). Outputs too on macOS."""
    with silenced():
        import coremltools as ct

        spec = ct.utils.load_spec(str(path))
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        raise ExportCheckError(f"{path.name}: a Core ML {kind}, expected an ML program")
    desc = spec.description
    want = torch_outputs(module, inputs)
    shapes_in = [tuple(i.type.multiArrayType.shape) for i in desc.input]
    if shapes_in != [tuple(t.shape) for t in inputs]:
        raise ExportCheckError(f"{path.name}: inputs {shapes_in}, torch has {[tuple(t.shape) for t in inputs]}")
    if len(desc.output) != len(want):
        raise ExportCheckError(f"{path.name}: {len(desc.output)} outputs, torch has {len(want)}")
    for out, ref in zip(desc.output, want):
        shape = tuple(out.type.multiArrayType.shape)
        if shape and shape != ref.shape:
            raise ExportCheckError(f"{path.name}: output {out.name} has shape {shape}, torch {ref.shape}")
    info = {"inputs": [i.name for i in desc.input], "outputs": [o.name for o in desc.output],
            "spec_version": spec.specificationVersion}
    if platform.system() == "Darwin":  # the Core ML runtime exists only on macOS
        model = ct.models.MLModel(str(path))
        feeds = {i.name: t.numpy() for i, t in zip(desc.input, inputs)}
        pred = model.predict(feeds)
        err = max(relative_error(np.asarray(pred[o.name]), ref) for o, ref in zip(desc.output, want))
        if not err <= COREML_TOLERANCE:
            raise ExportCheckError(f"{path.name}: Core ML output differs from torch (relative error {err:.2g})")
        info["relative_error"] = err
    return info
