"""ONNX bytes to a serialized TensorRT plan, at batch 1, with the precision the graph itself states.

Precision, by TensorRT version:
- TensorRT 10 and later, fp16 and int8: a strongly typed network. The fp16 graphs are fp16 and
  the int8 graphs carry explicit Q/DQ, so TensorRT follows the graph's own types and no precision
  flag is set (TensorRT 11 has no such flags; the INT8 calibrator is gone too).
- TensorRT 8.6 (JetPack 6.0, no strongly typed networks): an explicit batch network with
  BuilderFlag.FP16 for fp16, INT8 + FP16 for the Q/DQ int8 graphs (no calibrator: the scales are
  the graph's).
- fp32: a weakly typed network (strongly typed on TensorRT 11, which has nothing else).
- float32 in a graph means float32 in its engine: TF32 (TensorRT's default for float32 matrix
  maths, 10 mantissa bits) is cleared in every precision, so an fp32 engine matches ONNX Runtime's
  fp32 and the parts an fp16 or int8 graph keeps in float32 (``keep_fp32``: the audio front end)
  stay float32.

The settings are a plain dict (``build_settings``) because every one of them is part of the
engine cache's key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgefusion.backends.base import BackendError
from edgefusion.backends.tensorrt.options import TensorRTOptions
from edgefusion.backends.tensorrt.runtime_trt import strongly_typed_flag, trt_major

if TYPE_CHECKING:
    import tensorrt

OPS_TIP = (
    "TensorRT's ONNX parser takes the operators listed in export/tensorrt_onnx_ops.txt (package edgefusion.export): "
    "export the model again with edgefusion-export, which refuses any other"
)


def build_settings(trt: Any, precision: str, options: TensorRTOptions) -> dict:
    """What a build with this TensorRT does for this precision, as plain data: every setting is
    part of the engine cache's key, so a change of rule here rebuilds instead of loading a plan
    built another way."""
    strong = strongly_typed_flag(trt)
    set_flags: list[str] = []
    if strong is not None and (precision != "fp32" or trt_major(trt) >= 11):
        network_flags, strongly_typed = strong, True
    elif strong is not None:
        network_flags, strongly_typed = 0, False
    else:  # TensorRT 8.6: explicit batch is a flag, precision comes from builder flags
        network_flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        strongly_typed = False
        set_flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[precision]
    cleared = ["TF32"] if hasattr(trt.BuilderFlag, "TF32") else []
    return {
        "network_flags": network_flags,
        "strongly_typed": strongly_typed,
        "set_flags": set_flags,
        "cleared_flags": cleared,
        "workspace_mb": options.workspace_mb,
        "batch": 1,
    }


def build_plan(
    trt: Any,
    logger: Any,
    onnx: bytes,
    role: str,
    precision: str,
    options: TensorRTOptions,
    timing_cache: bytes | None,
) -> tuple[bytes, bytes]:
    """(the serialized plan, the timing cache after this build). One BackendError line when the
    parser refuses the graph or the builder gives nothing."""
    settings = build_settings(trt, precision, options)
    builder: tensorrt.Builder = trt.Builder(logger)
    network: tensorrt.INetworkDefinition = builder.create_network(settings["network_flags"])
    parser: tensorrt.OnnxParser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx):
        raise BackendError(f"TensorRT cannot parse the {role} graph ({precision}): {_parser_error(parser)}; {OPS_TIP}")

    config: tensorrt.IBuilderConfig = builder.create_builder_config()
    for name in settings["set_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in settings["cleared_flags"]:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    _batch_one_profile(trt, builder, network, config)
    cache: tensorrt.ITimingCache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    logger.last_error = None
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        why = logger.last_error or "TensorRT logged no error"
        raise BackendError(f"TensorRT could not build the {role} engine ({precision}): {why}")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def _batch_one_profile(
    trt: Any, builder: tensorrt.Builder, network: tensorrt.INetworkDefinition, config: tensorrt.IBuilderConfig
) -> None:
    """Engines run at batch 1 (the loop's one tick): the manifest's symbolic batch axis, and any
    other free axis, becomes 1 in a profile whose min, opt and max are all that shape."""
    inputs: list[tensorrt.ITensor] = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = {
        t.name: [t.shape[i] for i in range(len(t.shape))] for t in inputs
    }  # Dims: a tuple, typed without __iter__
    if all(d >= 0 for dims in shapes.values() for d in dims):
        return  # a static network takes no profile
    profile: tensorrt.IOptimizationProfile = builder.create_optimization_profile()
    for name, dims in shapes.items():
        shape = trt.Dims([1 if d < 0 else d for d in dims])
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)


def _parser_error(parser: tensorrt.OnnxParser) -> str:
    """The parser's first error, naming the node and its operator."""
    if parser.num_errors == 0:
        return "the parser gave no reason"
    err: tensorrt.ParserError = parser.get_error(0)
    desc = " ".join(str(err.desc()).split())
    # TensorRT 8.6: ParserError has node() but neither node_name() nor node_operator()
    name_of, op_of = getattr(err, "node_name", None), getattr(err, "node_operator", None)
    if name_of is None or op_of is None:
        return f"node {err.node()}: {desc}"
    return f"node {err.node()} ({name_of() or 'unnamed'}, operator {op_of()}): {desc}"
