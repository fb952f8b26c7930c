"""The demo bundle: the built-in LMF run through the public ``export_bundle``, like any user's model.

Its encoders and LMF layer are the trained checkpoint's; its audio front end stays fp32 (and float
in INT8); accuracy is measured on the compare report's held-out samples and INT8 is calibrated on
the same set ``quantize`` used, so the bundle's tables are the report's, on its own files.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgefusion.calibration.int8_set import CalibrationSet
from edgefusion.export import task_data
from edgefusion.export.api import LowRankFusion, Modality
from edgefusion.export.bundling import export_bundle
from edgefusion.export.compare import graph_digests
from edgefusion.export.models.encoders import LogMelFrontEnd
from edgefusion.export.models.model import BUILT_IN_KEEP_FP32
from edgefusion.export.pipeline import kind_dir, load_checkpoint

from edgefusion.errors import EdgefusionError
from edgefusion.modalities import MODALITIES
from edgefusion.task import AUDIO_WINDOW_S, HEIGHT, INTENTS, SAMPLE_RATE, WIDTH


def built_in_modalities(frontend: LogMelFrontEnd) -> dict[str, Modality]:
    return {
        "rgb": Modality.rgb(
            HEIGHT,
            WIDTH,
            preprocessing={
                "resize": {"width": WIDTH, "height": HEIGHT, "method": "area"},
                "in_graph": "per-frame, per-channel standardisation (exposure and white balance removed)",
            },
        ),
        "depth": Modality.depth(
            HEIGHT,
            WIDTH,
            preprocessing={
                "units": "metres (z16 value × depth scale)",
                "resize": {"width": WIDTH, "height": HEIGHT, "method": "nearest"},
            },
        ),
        "audio": Modality.audio(
            AUDIO_WINDOW_S,
            SAMPLE_RATE,
            preprocessing={
                "in_graph": (
                    f"RMS normalisation, {frontend.n_fft}-point framed DFT (hop {frontend.hop}) as Conv, "
                    f"{frontend.n_mels} mel bands, log; kept fp32 in every variant"
                ),
            },
        ),
    }


def heldout_description(n: int) -> dict:
    return {"task_seed": task_data.HELDOUT_SEED, "samples": n}


def build_bundle(runs: Path, dest: Path, report: dict, name: str, calib: CalibrationSet, warn=None) -> Path:
    """The bundle named ``name`` from the LMF run in ``runs`` that ``report`` (compare.json) measured;
    ``warn`` (a line on stderr) is told when the model is no better than chance."""
    kdir = kind_dir(runs, "lmf")
    fm, ckpt = load_checkpoint(kdir / "checkpoint.pt")
    onnx_dir = kdir / "onnx"
    missing = [p for p in ("fp32/head.onnx", "fp16/head.onnx", "int8/rgb.onnx") if not (onnx_dir / p).exists()]
    if missing:
        raise EdgefusionError(
            f"{onnx_dir}: {missing[0]} is missing; run `edgefusion-export export` and `quantize` first"
        )
    if "lmf" not in report.get("models", {}):
        raise EdgefusionError("the compare report has no lmf entry; run `edgefusion-export compare` first")
    lmf = report["models"]["lmf"]
    if lmf.get("graphs_sha256") != graph_digests(onnx_dir):
        raise EdgefusionError(
            "the compare report measured other graphs than those now in "
            f"{onnx_dir} (exported or quantized again since); run `edgefusion-export compare` again"
        )
    quantized = json.loads((onnx_dir / "int8" / "calibration.json").read_text())
    if quantized.get("sha256") != calib.sha256():
        raise EdgefusionError(
            f"{onnx_dir / 'int8'} was calibrated on {quantized.get('source')!r}, not on {calib.source!r}; "
            "give --sessions as `quantize` had them"
        )
    heldout = report.get("heldout", {})
    size = heldout.get("samples")
    if type(size) is not int or heldout.get("task_seed") != task_data.HELDOUT_SEED:
        raise EdgefusionError(
            "the compare report names no held-out sample count; run `edgefusion-export compare` again"
        )
    data = task_data.load(task_data.HELDOUT_SEED, size)
    model = LowRankFusion.from_parts(fm.encoders, fm.fusion)
    training = {k: v for k, v in ckpt["training"].items() if k != "history"}
    return export_bundle(
        model,
        dest,
        labels=list(INTENTS),
        modalities=built_in_modalities(fm.encoders["audio"].frontend),
        calibration=[calib.inputs],
        heldout=[({m: getattr(data, m) for m in MODALITIES}, data.intent)],
        name=name,
        keep_fp32=BUILT_IN_KEEP_FP32,
        calibration_source=calib.source,
        provenance={
            "training": {
                **training,
                "task": "built-in HRI intent task (edgefusion.task)",
                "final_loss": ckpt["training"]["history"][-1]["loss"],
            },
            "accuracy": {"heldout": heldout, "fusion_gain": lmf["fusion_gain"], "checks": lmf["checks"]},
        },
        warn=warn,
    )
