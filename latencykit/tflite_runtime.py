"""Load and run a .tflite file with LiteRT's interpreter: shared by the TFLite export check and the
`host-litert` device."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from latencykit.errors import DeviceUnavailableError
from latencykit.quiet import silenced


def interpreter(model: Path, threads: int = 1, xnnpack: bool = True):
    """A LiteRT interpreter with tensors allocated; XNNPACK is LiteRT's default CPU delegate."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with silenced() as log:
        try:
            interp = Interpreter(model_path=str(model), num_threads=threads,
                                 experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
        except Exception as exc:
            raise DeviceUnavailableError(f"LiteRT cannot load {model}: {exc} {log.tail()}".strip()) from exc
    return interp


def _by_index(names: Sequence[str]) -> list[str]:
    """Signature names (args_0, args_1, ..., output_0, ...) in argument order."""
    return sorted(names, key=lambda n: int(m.group()) if (m := re.search(r"\d+$", n)) else -1)


def run_tflite(model: Path, inputs: Sequence[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Outputs of one inference, inputs given in the torch module's argument order."""
    interp = interpreter(model, threads)
    signature = interp.get_signature_list()
    key = next(iter(signature))
    names_in = _by_index(signature[key]["inputs"])
    if len(names_in) != len(inputs):
        raise DeviceUnavailableError(f"{model.name} takes {len(names_in)} inputs, got {len(inputs)}")
    with silenced():
        out = interp.get_signature_runner(key)(**dict(zip(names_in, inputs)))
    return [np.asarray(out[name]) for name in _by_index(list(out))]
