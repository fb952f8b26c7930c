"""The data an INT8 quantizer calibrates on: real inputs, every presence pattern, a fingerprint.

Activation ranges are set by what the calibration batches contain. A graph that takes the
presence mask (the monolithic one) is fed every non-empty pattern in turn, so missing-sensor
activations, which span a far smaller range than all-present ones, get their share of the data
(notes/export.md: calibrating on all-present inputs alone collapsed missing-modality logits).
The sha256 fingerprint goes into the bundle manifest and the TensorRT engine cache key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgefusion.modalities import MODALITIES, all_patterns
from edgefusion.task import TaskBatch


@dataclass(frozen=True)
class CalibrationSet:
    inputs: dict[str, np.ndarray]  # modality → (N, ...) float32, in the bundle's modality order
    present: np.ndarray  # (N, M) float32: sample i has pattern i mod len(all_patterns(M))
    source: str

    @classmethod
    def from_inputs(cls, inputs: dict[str, np.ndarray], source: str) -> CalibrationSet:
        """Every non-empty presence pattern assigned round-robin over the samples."""
        patterns = np.array(all_patterns(len(inputs)), dtype=np.float32)
        n = len(next(iter(inputs.values())))
        return cls(dict(inputs), patterns[np.arange(n) % len(patterns)], source)

    @classmethod
    def from_batch(cls, batch: TaskBatch, source: str) -> CalibrationSet:
        return cls.from_inputs({m: getattr(batch, m) for m in MODALITIES}, source)

    def __len__(self) -> int:
        return len(self.present)

    def batches(self, input_names: list[str], batch_size: int = 16) -> Iterator[dict[str, np.ndarray]]:
        """Feeds for a graph with these inputs (modality names and/or "present")."""
        columns = {**self.inputs, "present": self.present}
        unknown = set(input_names) - set(columns)
        if unknown:
            raise ValueError(f"no calibration data for graph inputs {sorted(unknown)}")
        for i in range(0, len(self), batch_size):
            yield {name: np.ascontiguousarray(columns[name][i : i + batch_size]) for name in input_names}

    def sha256(self) -> str:
        h = hashlib.sha256()
        for name in (*self.inputs, "present"):
            arr = self.present if name == "present" else self.inputs[name]
            h.update(name.encode())
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        return {
            "source": self.source,
            "samples": len(self),
            "patterns": len(all_patterns(len(self.inputs))),
            "sha256": self.sha256(),
        }
