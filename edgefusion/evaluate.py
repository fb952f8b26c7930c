"""``edgefusion eval``: the seed's metrics, measured through the runtime's own backend path.

Accuracy per precision and presence pattern, Fusion_Gain, Robustness per missing modality
((Perf_complete - Perf_missing) / Perf_complete) and, MultiBench-style, accuracy against a noise
level 0..0.9 applied to one modality at a time, with its area as "relative robustness".
The data is the bundle's held-out set, regenerated from the task seed in its manifest.
"""

from __future__ import annotations

import numpy as np

from edgefusion.atomic import atomic_write
from edgefusion.backends.base import Backend
from edgefusion.bundle import Bundle
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import MODALITIES, all_patterns, pattern_name
from edgefusion.task import TaskBatch, generate

NOISE_LEVELS = tuple(round(0.1 * k, 1) for k in range(10))


def heldout(bundle: Bundle, samples: int) -> TaskBatch:
    seed = bundle.accuracy.get("heldout", {}).get("task_seed")
    if seed is None:
        raise EdgefusionError(
            f"{bundle.root}: the manifest names no held-out task seed; pass a bundle from edgefusion-export"
        )
    return generate(int(seed), samples)


def _predict(
    backend: Backend, batch: TaskBatch, patterns, corrupt=None
) -> tuple[dict[tuple, np.ndarray], dict[tuple, np.ndarray]]:
    """Predicted class and its probability (the result line's confidence) per sample for each
    pattern. The backend's caching encodes a sample once, and again only for a modality coming
    back after a pattern where it was absent."""
    preds = {p: np.empty(len(batch), np.int64) for p in patterns}
    conf = {p: np.empty(len(batch), np.float32) for p in patterns}
    for i in range(len(batch)):
        for m in MODALITIES:
            x = getattr(batch, m)[i]
            np.copyto(backend.input_buffer(m)[0], corrupt(m, x, i) if corrupt else x)
        fresh = [True] * len(MODALITIES)
        for p in patterns:
            backend.submit(fresh, p)
            probs = backend.wait()[1]
            preds[p][i] = int(np.argmax(probs))
            conf[p][i] = probs[preds[p][i]]
            fresh = [False] * len(MODALITIES)
    return preds, conf


def noisy(modality: str, level: float, seed: int):
    """MultiBench's corruption: blend ``level`` of Gaussian noise (the sample's own mean and
    spread) into one modality; per sample ``i``, reproducibly."""

    def corrupt(m: str, x: np.ndarray, i: int) -> np.ndarray:
        if m != modality or level == 0:
            return x
        rng = np.random.default_rng([seed, i])
        noise = rng.normal(x.mean(), x.std() + 1e-6, x.shape).astype(np.float32)
        return ((1 - level) * x + level * noise).astype(np.float32)

    return corrupt


def evaluate(bundle: Bundle, backends: dict[str, Backend], batch: TaskBatch, noise: bool = True) -> dict:
    patterns = all_patterns(len(MODALITIES))
    full = patterns[0]
    accuracy, confidence = {}, {}
    for prec, backend in backends.items():
        preds, conf = _predict(backend, batch, patterns)
        accuracy[prec] = {pattern_name(MODALITIES, p): float((preds[p] == batch.intent).mean()) for p in patterns}
        confidence[prec] = {pattern_name(MODALITIES, p): float(conf[p].mean()) for p in patterns}
    ref = accuracy["fp32"] if "fp32" in accuracy else next(iter(accuracy.values()))
    complete = ref[pattern_name(MODALITIES, full)]
    best_single = max(ref[m] for m in MODALITIES)
    report = {
        "samples": len(batch),
        "accuracy": accuracy,
        # Mean confidence per pattern next to its accuracy: a result's confidence says what is
        # missing only if the two agree (they do for the shipped bundle: within 0.03).
        "confidence": confidence,
        "fusion_gain": (complete - best_single) / best_single,
        "robustness": {
            m: (complete - ref[pattern_name(MODALITIES, tuple(x != m for x in MODALITIES))]) / complete
            for m in MODALITIES
        },
    }
    if noise:
        precision = "fp32" if "fp32" in backends else next(iter(backends))
        backend = backends[precision]
        curves = {}
        for m in MODALITIES:
            curves[m] = [
                float((_predict(backend, batch, [full], noisy(m, lvl, 1000 + k))[0][full] == batch.intent).mean())
                for k, lvl in enumerate(NOISE_LEVELS)
            ]
        report["noise"] = {"levels": list(NOISE_LEVELS), "precision": precision, "accuracy": curves}
        report["relative_robustness"] = {m: float(np.mean(c)) for m, c in curves.items()}
    return report


def require_matplotlib():
    """pyplot, or one line saying how to get it: checked before the work whose result it draws."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgefusionError("--plot needs matplotlib: pip install 'edgefusion[plot]'") from None
    return plt


def plot(report: dict, path, bundle: Bundle) -> None:
    """The noise curves as a PNG at ``path`` (written whole or not at all)."""
    plt = require_matplotlib()
    fig = figure(report, bundle)
    try:
        with atomic_write(path) as f:  # a full disk leaves no half a PNG
            fig.savefig(f, format="png", dpi=120)
    except OSError as err:
        raise EdgefusionError(f"cannot write the plot to {path}: {err.strerror}") from None
    finally:
        plt.close(fig)


def figure(report: dict, bundle: Bundle):
    """The noise curves, saying what they measure: the bundle, the precision (the curves run on
    fp32 where the bundle has it), the sample count, and chance (1 / number of labels)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    levels = report["noise"]["levels"]
    for m, acc in report["noise"]["accuracy"].items():
        ax.plot(levels, acc, marker="o", label=m)
    chance = 1 / len(bundle.labels)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance (1/{len(bundle.labels)})")
    ax.set_xlabel("noise level on one modality (0 = clean, 0.9 = mostly noise)")
    ax.set_ylabel("accuracy, all sensors present")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    # Beside the axes, not over them: the curves start top left, where a legend inside would sit.
    ax.legend(title="noisy modality", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    name = bundle.manifest.get("name", bundle.root.name)
    ax.set_title(
        f"Accuracy under noise (MultiBench-style)\n{name}, {report['noise']['precision']}, "
        f"{report['samples']} held-out samples",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def render(report: dict) -> str:
    patterns = list(next(iter(report["accuracy"].values())))
    lines = [f"{report['samples']} held-out samples", "prec  " + "".join(f"{p:>17}" for p in patterns)]
    for prec, acc in report["accuracy"].items():
        lines.append(f"{prec:<6}" + "".join(f"{acc[p]:>17.3f}" for p in patterns))
    for prec, conf in report["confidence"].items():
        lines.append(f"{'conf':<6}" + "".join(f"{conf[p]:>17.3f}" for p in patterns) + f"  (mean confidence, {prec})")
    lines.append(f"Fusion_Gain {report['fusion_gain']:.3f}")
    lines.append(
        "Robustness (drop when missing): " + ", ".join(f"{m} {v:.3f}" for m, v in report["robustness"].items())
    )
    if "noise" in report:
        lines.append("accuracy vs noise level " + " ".join(f"{lvl:.1f}" for lvl in report["noise"]["levels"]))
        for m, acc in report["noise"]["accuracy"].items():
            lines.append(
                f"  {m:<6}"
                + " ".join(f"{a:.2f}" for a in acc)
                + f"   relative robustness {report['relative_robustness'][m]:.3f}"
            )
    return "\n".join(lines)
