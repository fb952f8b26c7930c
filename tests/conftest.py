import os
import subprocess

import pytest


@pytest.fixture(scope="session")
def exported_lmf(tmp_path_factory):
    """An untrained (random-weight) LMF model exported to fp32 + fp16: equivalence does not need
    training, and a fresh model keeps these tests independent of the shipped bundle."""
    torch = pytest.importorskip("torch")
    from edgefusion.export.models.model import FusionModel, ModelConfig
    from edgefusion.export.onnx_export import export_all

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = FusionModel(ModelConfig(fusion="lmf")).eval()
    out = tmp_path_factory.mktemp("lmf")
    return model, export_all(model, out)


@pytest.fixture(scope="session")
def small_batch():
    from edgefusion.task import generate

    return generate(seed=99, n=6)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a disk that really fills up (needs root and mount; skipped otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)
