"""The workstation side (installed as ``edgefusion.export``): needs the ``export`` extra (torch).

Your own model, exported to a bundle the robot runs (``LowRankFusion``, ``Modality`` and
``export_bundle`` load torch on first use, so ``import edgefusion.export`` alone stays light)::

    import torch
    from edgefusion.export import LowRankFusion, Modality, export_bundle, random_presence

    model = LowRankFusion({"range": MyDepthNet(), "mic": MyAudioNet()},  # raw input -> (N, d_m)
                          dims={"range": 48, "mic": 32}, n_classes=4, rank=6, d_out=24)
    # training: logits = model({"range": depth, "mic": pcm}, random_presence(len(depth), 2))
    export_bundle(model, out="my_bundle", labels=["left", "right", "up", "down"],
                  modalities={"range": Modality.depth(height=96, width=128),
                              "mic": Modality.audio(seconds=0.5, rate=16000)},
                  calibration=[{"range": depth[:64], "mic": pcm[:64]}],  # raw inputs, as delivered
                  heldout=[({"range": depth_val, "mic": pcm_val}, labels_val)],  # optional
                  precisions=("fp32", "fp16", "int8"), keep_fp32=("frontend",))

The encoders take exactly what the runtime delivers (rgb (N, 3, H, W) 0..255, depth (N, 1, H, W)
metres with 0 = no data, audio (N, samples) in int16 units) and need no casts: the exporter casts
at each module's door for fp16. ``edgefusion-export bundle --model MODULE:FACTORY --out DIR`` does
the same from the command line (``edgefusion.export.factory``).
"""

FUSION_KINDS = ("lmf", "early", "late", "tensor")

_PUBLIC = {
    "LowRankFusion": "edgefusion.export.api",
    "Modality": "edgefusion.export.api",
    "random_presence": "edgefusion.export.api",
    "export_bundle": "edgefusion.export.bundling",
}
__all__ = ["FUSION_KINDS", *_PUBLIC]


def __getattr__(name: str):
    """The public API, imported on first use (it needs torch; the CLI's argument errors do not)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)
