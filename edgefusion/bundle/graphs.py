"""A bundle's graphs against its manifest: the inputs and outputs every backend binds, and one run.

Read through onnxruntime (the device has no onnx package), from the very bytes that were hashed.
"""

from __future__ import annotations

import numpy as np

from edgefusion.bundle.manifest import HEAD, MANIFEST, REEXPORT, modality_specs
from edgefusion.errors import BundleError, EdgefusionError

# (name, shape after the batch axis) of each input and output a graph must have, in the manifest's order.
TensorIO = tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[tuple[str, tuple[int, ...]], ...]]


def graph_io(doc: dict, graph: str) -> TensorIO:
    """What ``graph`` (a modality's name, "head" or "monolithic") must take and give, from the
    validated manifest: the contract every backend binds."""
    specs = modality_specs(doc)
    width = (len(doc["labels"]),)
    for spec in specs:
        if spec.name == graph:
            return ((spec.input_name, spec.shape),), ((spec.output_name, spec.projection),)
    if graph == HEAD:
        head = doc["head"]
        inputs = tuple((name, spec.projection) for name, spec in zip(head["inputs"], specs))
        return inputs, tuple((name, width) for name in head["outputs"])
    mono = doc["monolithic"]
    *names, present = mono["inputs"]
    inputs = tuple((name, spec.shape) for name, spec in zip(names, specs))
    return (*inputs, (present, (len(specs),))), tuple((name, width) for name in mono["outputs"])


def check_graph(data: bytes, rel: str, role: str, want: TensorIO, where: str) -> None:
    """The graph in ``data`` has exactly the inputs and outputs ``want`` (float32, batch axis first)
    and, run once on zeros, gives finite outputs of those shapes."""
    from edgefusion.backends.base import first_line
    from edgefusion.backends.onnxruntime.session import open_session

    try:
        session = open_session(data, providers=["CPUExecutionProvider"], optimize=False)
    except EdgefusionError as err:
        raise BundleError(f"{where}: {rel} ({role} graph) cannot be loaded: {first_line(err)}; {REEXPORT}") from None
    for side, declared, want_side in (
        ("inputs", session.get_inputs(), want[0]),
        ("outputs", session.get_outputs(), want[1]),
    ):
        got = {arg.name: arg for arg in declared}
        if set(got) != {name for name, _ in want_side}:
            raise BundleError(
                f"{where}: {rel} ({role} graph) has {side} {sorted(got)}, but {MANIFEST} says "
                f"{sorted(name for name, _ in want_side)}; {REEXPORT}"
            )
        for name, shape in want_side:
            arg = got[name]
            if arg.type != "tensor(float)" or not _same_shape(arg.shape, shape):
                raise BundleError(
                    f"{where}: {rel} ({role} graph) {side[:-1]} {name!r} is {arg.type} of shape {arg.shape}, but "
                    f"{MANIFEST} says float32 of shape [batch, {', '.join(map(str, shape))}]; {REEXPORT}"
                )
    # Zeros: a neutral input every encoder must map to finite values. The monolithic graph's
    # presence mask (its input beyond the modalities) reads zeros as "all absent": also a valid tick.
    feed = {name: np.zeros((1, *shape), np.float32) for name, shape in want[0]}
    try:
        outputs = session.run([name for name, _ in want[1]], feed)
    except Exception as err:  # onnxruntime raises its own exception types for a graph that fails to run
        raise BundleError(f"{where}: {rel} ({role} graph) fails to run: {first_line(err)}; {REEXPORT}") from None
    for (name, shape), out in zip(want[1], outputs):
        if not isinstance(out, np.ndarray) or out.shape != (1, *shape) or out.dtype != np.float32:
            came = f"{out.dtype} of shape {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise BundleError(
                f"{where}: {rel} ({role} graph) output {name!r} comes out as {came}, not float32 of shape (1, "
                f"{', '.join(map(str, shape))}); {REEXPORT}"
            )
        if not np.isfinite(out).all():
            raise BundleError(
                f"{where}: {rel} ({role} graph) output {name!r} is NaN or infinite on zero inputs: "
                f"its weights are damaged; {REEXPORT}"
            )


def _same_shape(graph_shape: list, shape: tuple[int, ...]) -> bool:
    """A graph's declared shape is [batch, *shape]: its batch axis a name, unknown, or 1; the rest exact."""
    if len(graph_shape) != len(shape) + 1:
        return False
    batch, *rest = graph_shape
    return (batch is None or isinstance(batch, str) or batch == 1) and tuple(rest) == shape
