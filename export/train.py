"""Training with modality dropout, so every presence pattern is served by one model.

Each sample in a batch gets a presence pattern drawn at random (the full pattern most often,
then the two-sensor patterns the robot meets when one sensor dies, then single sensors, which
by the task's design are right only in the plain style and teach the model a modest confidence).
An auxiliary cue loss per encoder (the generator knows which word, gesture and object it made)
gives the encoders a direct signal; the aux heads are never exported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from edgefusion.export.api import pattern_weights
from edgefusion.export.graph_eval import Data, column
from edgefusion.export.models.model import FusionModel

from edgefusion.modalities import MODALITIES, all_patterns, pattern_name
from edgefusion.task import TaskBatch


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 14
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    aux_weight: float = 0.5
    # Probability of each pattern group: all present / one missing / one present.
    pattern_probs: tuple[float, float, float] = (0.3, 0.6, 0.1)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def audio_features(model: FusionModel, audio: np.ndarray, chunk: int = 512) -> torch.Tensor:
    enc = model.encoders["audio"]
    return torch.cat([enc.features(torch.from_numpy(audio[i : i + chunk])) for i in range(0, len(audio), chunk)])


def train(model: FusionModel, data: TaskBatch, cfg: TrainConfig, log: Callable[[str], None] = print) -> dict:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    patterns, weights = pattern_weights(len(MODALITIES), cfg.pattern_probs)
    patterns = np.array(patterns, dtype=np.float32)
    feats = audio_features(model, data.audio)
    rgb, depth = torch.from_numpy(data.rgb), torch.from_numpy(data.depth)
    intent, cues = torch.from_numpy(data.intent), torch.from_numpy(data.cues)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = int(np.ceil(len(data) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    history = []
    t0 = time.time()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(data)))
        total, correct, seen = 0.0, 0, 0
        aux_hits = torch.zeros(len(MODALITIES))
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            present = torch.from_numpy(patterns[rng.choice(len(patterns), size=len(idx), p=weights)])
            h = {
                "rgb": model.encoders["rgb"](rgb[idx]),
                "depth": model.encoders["depth"](depth[idx]),
                "audio": model.encoders["audio"].embed_features(feats[idx]),
            }
            logits = model.fusion(h, present)
            loss = F.cross_entropy(logits, intent[idx])
            for i, m in enumerate(MODALITIES):
                known = cues[idx, i] >= 0  # recorded sessions do not know what each cue said
                if known.any():
                    loss = loss + cfg.aux_weight * F.cross_entropy(model.aux[m](h[m][known]), cues[idx, i][known])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            aux_hits += torch.stack(
                [(model.aux[m](h[m]).argmax(1) == cues[idx, i]) for i, m in enumerate(MODALITIES)], 1
            ).sum(0)
            full = present.all(1)
            correct += (logits.argmax(1)[full] == intent[idx][full]).sum().item()
            seen += full.sum().item()
        history.append({"epoch": epoch + 1, "loss": total / len(data), "train_acc_full": correct / max(seen, 1)})
        log(
            f"epoch {epoch + 1}/{cfg.epochs}  loss {total / len(data):.3f}  "
            f"train acc (all present) {correct / max(seen, 1):.3f}  "
            f"cue acc {' '.join(f'{m} {a:.2f}' for m, a in zip(MODALITIES, (aux_hits / len(data)).tolist()))}  "
            f"{time.time() - t0:.0f}s"
        )
    model.eval()
    return {"history": history, "seconds": round(time.time() - t0, 1)}


@torch.no_grad()
def logits_by_pattern(model, data: Data, chunk: int = 256, device: str = "cpu") -> dict[str, np.ndarray]:
    """Logits of ``model`` (the built-in FusionModel or a LowRankFusion) for every presence
    pattern of its modalities, in its own precision (fp16 model: true fp16) on ``device`` (the
    model must already be there).

    The encoders do not depend on the pattern, so each sample is embedded once.
    """
    model.eval()
    names = model.names
    n = len(column(data, names[0]))
    h: dict[str, list[torch.Tensor]] = {m: [] for m in names}
    for i in range(0, n, chunk):
        inputs = {m: torch.from_numpy(column(data, m)[i : i + chunk]).to(device) for m in names}
        for m, x in model.embed(inputs).items():
            h[m].append(x)
    emb = {m: torch.cat(v) for m, v in h.items()}
    dtype = emb[names[0]].dtype
    out = {}
    for p in all_patterns(len(names)):
        mask = torch.tensor([p] * n, dtype=dtype, device=device)
        out[pattern_name(names, p)] = model.fusion(emb, mask).float().cpu().numpy()
    return out


def accuracy_by_pattern(model: FusionModel, data: TaskBatch) -> dict[str, float]:
    return {name: float((lg.argmax(1) == data.intent).mean()) for name, lg in logits_by_pattern(model, data).items()}
