"""``edgefusion eval``: the held-out metrics, measured through the runtime's own backend path.

Accuracy per precision and presence pattern, Fusion_Gain, Robustness per missing modality
((Perf_complete - Perf_missing) / Perf_complete) and, MultiBench-style, accuracy against a noise
level 0..0.9 applied to one modality at a time, with its area as "relative robustness".

The data: for a bundle of the built-in task (its labels are the task's intents and each modality
takes the task's data for its stream), the held-out set regenerated from the task seed in its
manifest. Any other bundle's held-out data is the user's: an .npz with one array per modality
name, shaped (N, *input shape) as the runtime delivers it, and ``labels``, (N,) class indices
or label strings (``heldout(..., data=path)``, the ``--data`` of ``edgefusion eval``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefusion.atomic import atomic_write
from edgefusion.backends.base import Backend, first_line
from edgefusion.bundle import Bundle
from edgefusion.errors import EdgefusionError
from edgefusion.modalities import all_patterns, pattern_name

NOISE_LEVELS = tuple(round(0.1 * k, 1) for k in range(10))


@dataclass(frozen=True)
class Heldout:
    """Labelled samples for a bundle: ``inputs`` by modality name, (N, *input shape) float32;
    ``labels`` (N,) class indices into the bundle's labels; ``source`` says where they came from."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def task_inputs(bundle: Bundle, batch) -> dict[str, np.ndarray] | None:
    """The built-in task's ``batch`` (a TaskBatch) as this bundle's inputs, by modality name; None
    unless the bundle is a model of that task: its labels the task's intents and each modality's
    input the shape of the task's data for its stream."""
    from edgefusion.task import INTENTS

    if bundle.labels != tuple(INTENTS):
        return None
    inputs = {spec.name: getattr(batch, spec.sensor) for spec in bundle.modalities}
    if any(inputs[spec.name].shape[1:] != spec.shape for spec in bundle.modalities):
        return None
    return inputs


def heldout(bundle: Bundle, samples: int, data: str | Path | None = None) -> Heldout:
    """``samples`` held-out samples: the first of the .npz at ``data`` if given, else the built-in
    task's held-out set for a bundle of that task; EdgefusionError (one line) otherwise."""
    if data is not None:
        return load_heldout(bundle, data, samples)
    from edgefusion.task import generate

    probe = task_inputs(bundle, generate(0, 1))
    if probe is None:
        raise EdgefusionError(
            f"{bundle.root}: not a model of the built-in task, so eval has no held-out data of its own; give it "
            f"labelled data: an .npz with one array per modality ({', '.join(bundle.names)}) and labels (--data FILE)"
        )
    seed = bundle.accuracy.get("heldout", {}).get("task_seed")
    if seed is None:
        raise EdgefusionError(
            f"{bundle.root}: the manifest names no held-out task seed; pass a bundle from edgefusion-export"
        )
    batch = generate(int(seed), samples)
    inputs = task_inputs(bundle, batch)
    assert inputs is not None  # the probe's labels and shapes are the batch's
    return Heldout(inputs, batch.intent, f"the built-in task, seed {seed}")


def load_heldout(bundle: Bundle, path: str | Path, samples: int) -> Heldout:
    """The first ``samples`` rows of the .npz at ``path``, checked against the bundle (one line each)."""
    where = f"--data {path}"
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a lone .npy array
            raise ValueError("a single array, not an archive of named arrays")
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    except FileNotFoundError:
        raise EdgefusionError(f"{where}: no such file; give an .npz of held-out data") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise EdgefusionError(
            f"{where}: not a readable .npz of plain arrays ({first_line(err)}); write it with numpy.savez"
        ) from None
    want = {*bundle.names, "labels"}
    if set(arrays) != want:
        raise EdgefusionError(
            f"{where}: holds arrays {sorted(arrays)}, but this bundle needs exactly {sorted(want)} "
            "(one per modality, and labels)"
        )
    labels = arrays["labels"]
    n = len(labels) if labels.ndim == 1 else 0
    if n == 0:
        raise EdgefusionError(
            f"{where}: labels must be a non-empty 1-D array, one per sample; got shape {labels.shape}"
        )
    if labels.dtype.kind in "US":
        unknown = sorted(set(labels.tolist()) - set(bundle.labels))
        if unknown:
            raise EdgefusionError(
                f"{where}: label {unknown[0]!r} is not one of the bundle's ({', '.join(bundle.labels)})"
            )
        labels = np.array([bundle.labels.index(x) for x in labels.tolist()], np.int64)
    elif labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(bundle.labels):
        raise EdgefusionError(
            f"{where}: labels must be label strings or class indices 0..{len(bundle.labels) - 1}; got {labels.dtype} "
            f"values {labels.min()}..{labels.max()}"
        )
    inputs = {}
    for spec in bundle.modalities:
        x = arrays[spec.name]
        if x.shape != (n, *spec.shape):
            raise EdgefusionError(
                f"{where}: array {spec.name!r} has shape {x.shape}, but {n} samples of this bundle's {spec.name} "
                f"input are {(n, *spec.shape)}"
            )
        if x.dtype.kind not in "fiu" or not np.isfinite(x).all():
            raise EdgefusionError(f"{where}: array {spec.name!r} must hold finite numbers (got {x.dtype})")
        inputs[spec.name] = x[:samples].astype(np.float32, copy=False)
    return Heldout(inputs, labels[:samples].astype(np.int64), str(path))


def _predict(
    backend: Backend, data: Heldout, patterns, corrupt=None
) -> tuple[dict[tuple, np.ndarray], dict[tuple, np.ndarray]]:
    """Predicted class and its probability (the result line's confidence) per sample for each
    pattern. The backend's caching encodes a sample once, and again only for a modality coming
    back after a pattern where it was absent."""
    names = backend.names
    preds = {p: np.empty(len(data), np.int64) for p in patterns}
    conf = {p: np.empty(len(data), np.float32) for p in patterns}
    for i in range(len(data)):
        for m in names:
            x = data.inputs[m][i]
            np.copyto(backend.input_buffer(m)[0], corrupt(m, x, i) if corrupt else x)
        fresh = [True] * len(names)
        for p in patterns:
            backend.submit(fresh, p)
            probs = backend.wait()[1]
            preds[p][i] = int(np.argmax(probs))
            conf[p][i] = probs[preds[p][i]]
            fresh = [False] * len(names)
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


def evaluate(bundle: Bundle, backends: dict[str, Backend], data: Heldout, noise: bool = True) -> dict:
    """The report. With one modality there is nothing to fuse or to lose: Fusion_Gain is 0 and
    Robustness is empty; a ratio over an accuracy of 0 is null."""
    names = bundle.names
    patterns = all_patterns(len(names))
    full = patterns[0]
    accuracy, confidence = {}, {}
    for prec, backend in backends.items():
        preds, conf = _predict(backend, data, patterns)
        accuracy[prec] = {pattern_name(names, p): float((preds[p] == data.labels).mean()) for p in patterns}
        confidence[prec] = {pattern_name(names, p): float(conf[p].mean()) for p in patterns}
    ref = accuracy["fp32"] if "fp32" in accuracy else next(iter(accuracy.values()))
    complete = ref[pattern_name(names, full)]
    best_single = max(ref[m] for m in names)
    without = {m: pattern_name(names, tuple(x != m for x in names)) for m in names} if len(names) > 1 else {}
    report = {
        "samples": len(data),
        "data": data.source,
        # What ran each precision's figures: a TensorRT build that failed runs on the next backend
        # (or precision) that does, and its row is then that one's, said here and by ``render``.
        "backends": {
            p: {"backend": b.name, "precision": b.precision, "degraded": b.degraded} for p, b in backends.items()
        },
        "accuracy": accuracy,
        # Mean confidence per pattern next to its accuracy: a result's confidence says what is
        # missing only if the two agree (they do for the shipped bundle: within 0.03).
        "confidence": confidence,
        "fusion_gain": _ratio(complete - best_single, best_single),
        "robustness": {m: _ratio(complete - ref[p], complete) for m, p in without.items()},
    }
    if noise:
        precision = "fp32" if "fp32" in backends else next(iter(backends))
        backend = backends[precision]
        curves = {}
        for m in names:
            curves[m] = [
                float((_predict(backend, data, [full], noisy(m, lvl, 1000 + k))[0][full] == data.labels).mean())
                for k, lvl in enumerate(NOISE_LEVELS)
            ]
        report["noise"] = {"levels": list(NOISE_LEVELS), "precision": precision, "accuracy": curves}
        report["relative_robustness"] = {m: float(np.mean(c)) for m, c in curves.items()}
    return report


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


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
    lines = [
        f"{report['samples']} held-out samples ({report['data']}); "
        + ", ".join(f"{p} on {b['backend']} {b['precision']}" for p, b in report["backends"].items()),
        *(f"DEGRADED {p}: {b['degraded']}" for p, b in report["backends"].items() if b["degraded"]),
        "prec  " + "".join(f"{p:>17}" for p in patterns),
    ]
    for prec, acc in report["accuracy"].items():
        lines.append(f"{prec:<6}" + "".join(f"{acc[p]:>17.3f}" for p in patterns))
    for prec, conf in report["confidence"].items():
        lines.append(f"{'conf':<6}" + "".join(f"{conf[p]:>17.3f}" for p in patterns) + f"  (mean confidence, {prec})")
    lines.append(f"Fusion_Gain {_show(report['fusion_gain'])}")
    if report["robustness"]:
        lines.append(
            "Robustness (drop when missing): " + ", ".join(f"{m} {_show(v)}" for m, v in report["robustness"].items())
        )
    if "noise" in report:
        lines.append("accuracy vs noise level " + " ".join(f"{lvl:.1f}" for lvl in report["noise"]["levels"]))
        for m, acc in report["noise"]["accuracy"].items():
            lines.append(
                f"  {m:<8}"
                + " ".join(f"{a:.2f}" for a in acc)
                + f"   relative robustness {report['relative_robustness'][m]:.3f}"
            )
    return "\n".join(lines)


def _show(value: float | None) -> str:
    return "n/a (accuracy 0)" if value is None else f"{value:.3f}"
