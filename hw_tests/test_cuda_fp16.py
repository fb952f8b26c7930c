"""fp16 on a real GPU: the exported precision, checked where it will run (tensor-core kernels).

On a CPU, PyTorch's fp16 is the project's true-fp16 reference; here the same model runs in
CUDA fp16 and must agree with fp32 on every presence pattern. Also shows whether TF32 (on by
default for cuDNN convolutions) moves the fp32 audio front end. Needs a CUDA GPU, torch, and an
LMF checkpoint (EDGEFUSION_CHECKPOINT, default runs/lmf/checkpoint.pt).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CHECKPOINT = Path(os.environ.get("EDGEFUSION_CHECKPOINT", "runs/lmf/checkpoint.pt"))


def test_fp16_on_the_gpu_agrees_with_fp32_on_every_pattern():
    from edgefusion.export import task_data
    from edgefusion.export.models.model import to_fp16
    from edgefusion.export.pipeline import load_checkpoint
    from edgefusion.export.train import logits_by_pattern

    if not CHECKPOINT.exists():
        pytest.skip(f"no checkpoint at {CHECKPOINT}")
    model, _ = load_checkpoint(CHECKPOINT)
    data = task_data.build(task_data.HELDOUT_SEED, 2000)
    ref = logits_by_pattern(model, data)  # fp32 on the CPU
    results = {}
    for name, tf32 in (("fp32_cuda_tf32", True), ("fp32_cuda_strict", False), ("fp16_cuda", False)):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        m = (to_fp16(model) if name.startswith("fp16") else model).cuda()
        got = logits_by_pattern(m, data, device="cuda")
        results[name] = {
            p: {
                "accuracy": float((got[p].argmax(1) == data.intent).mean()),
                "agreement": float((got[p].argmax(1) == ref[p].argmax(1)).mean()),
                "max_abs_err": float(np.abs(got[p] - ref[p]).max()),
                "max_abs_ref": float(np.abs(ref[p]).max()),
            }
            for p in ref
        }
        model = model.cpu()
    results["fp32_cpu_accuracy"] = {p: float((ref[p].argmax(1) == data.intent).mean()) for p in ref}
    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__, **results}))
    out = os.environ.get("OUT")
    if out:
        Path(out, "cuda_fp16.json").write_text(json.dumps(results, indent=1))
    for name in ("fp16_cuda", "fp32_cuda_strict"):
        for p, r in results[name].items():
            assert r["agreement"] >= 0.995, (name, p, r)
            assert abs(r["accuracy"] - results["fp32_cpu_accuracy"][p]) <= 0.002, (name, p, r)
