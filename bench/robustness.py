"""Noise robustness of every trained fusion kind, side by side (workstation; a benchmark).

    python bench/robustness.py [--runs runs] [--samples 1000] [--json]

For each kind with an exported fp32 monolithic graph under ``runs/<kind>/onnx``: accuracy with
all modalities present while one modality is blended with 0-90 % noise (MultiBench-style, the
same corruption as ``edgefusion eval``), its mean as relative robustness, and the seed's
Robustness per missing modality. Tells whether LMF collapses under noise where late fusion
does not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from edgefusion.export.graph_eval import monolithic_logits

from edgefusion.evaluate import NOISE_LEVELS, noisy
from edgefusion.modalities import MODALITIES, all_patterns, pattern_name
from edgefusion.task import TaskBatch, generate

HELDOUT_SEED = 2


def _corrupted(batch: TaskBatch, modality: str, level: float, seed: int) -> TaskBatch:
    corrupt = noisy(modality, level, seed)
    x = np.stack([corrupt(modality, v, i) for i, v in enumerate(getattr(batch, modality))])
    return TaskBatch(**{**batch.__dict__, modality: x})


def kind_report(graph: Path, batch: TaskBatch) -> dict:
    full = all_patterns(len(MODALITIES))[0]
    acc = {p: float((lg.argmax(1) == batch.intent).mean()) for p, lg in monolithic_logits(graph, batch).items()}
    complete = acc[pattern_name(MODALITIES, full)]
    curves = {
        m: [
            float(
                (
                    monolithic_logits(graph, _corrupted(batch, m, lvl, 1000 + k), [full])[
                        pattern_name(MODALITIES, full)
                    ].argmax(1)
                    == batch.intent
                ).mean()
            )
            for k, lvl in enumerate(NOISE_LEVELS)
        ]
        for m in MODALITIES
    }
    without = {m: acc[pattern_name(MODALITIES, tuple(x != m for x in MODALITIES))] for m in MODALITIES}
    return {
        "accuracy": acc,
        "robustness": {m: (complete - without[m]) / complete for m in MODALITIES},
        "noise": curves,
        "relative_robustness": {m: float(np.mean(c)) for m, c in curves.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    batch = generate(HELDOUT_SEED, args.samples)
    report = {
        kind.name: kind_report(kind / "onnx" / "fp32" / "monolithic.onnx", batch)
        for kind in sorted(args.runs.iterdir())
        if (kind / "onnx" / "fp32" / "monolithic.onnx").is_file()
    }
    if args.json:
        print(json.dumps(report))
        return
    print("noise level " + " ".join(f"{lvl:5.1f}" for lvl in NOISE_LEVELS))
    for kind, r in report.items():
        for m, curve in r["noise"].items():
            mean = r["relative_robustness"][m]
            print(f"{kind:>6} {m:<5} " + " ".join(f"{a:5.3f}" for a in curve) + f"   mean {mean:.3f}")
        print(f"{kind:>6} robustness (missing) " + ", ".join(f"{m} {v:.3f}" for m, v in r["robustness"].items()))


if __name__ == "__main__":
    main()
