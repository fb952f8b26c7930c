"""The HIL suite's options and shared fixtures (``edgefusion.hil.plugin``): the rig, the bundle,
the backends to check, and each test's ``figures``. Run ``python -m pytest hw_tests --help`` for
the options (``--rig``, ``--backend``, ``--bundle``, ``--data``, ``--precision``, ``--hil-figures``)."""

import os

import pytest

from edgefusion.hil.plugin import figures, pytest_addoption, pytest_configure, pytest_sessionfinish  # noqa: F401


@pytest.fixture(scope="session")
def bundle(request):
    from edgefusion.bundle import default_bundle_path, load_bundle

    return load_bundle(request.config.getoption("--bundle") or default_bundle_path())


@pytest.fixture(scope="session")
def hil_rig(request):
    """The rig the loop tests run on (``--rig``); ``EDGEFUSION_SERIAL`` and ``EDGEFUSION_MIC`` pick
    the real rig's camera and microphone, as ``[camera] serial`` and ``[microphone] device``."""
    from edgefusion.hil.rigs import make_hil_rig

    kind = request.config.getoption("--rig")
    options = (
        {}
        if kind == "virtual"
        else {
            "serial": os.environ.get("EDGEFUSION_SERIAL", ""),
            "microphone": os.environ.get("EDGEFUSION_MIC", ""),
        }
    )
    return make_hil_rig(kind, **options)


@pytest.fixture
def rig_for(hil_rig, bundle):
    """The rig, once it can give the bundle's streams here (else the test skips, saying what is missing)."""
    reason = hil_rig.unavailable([s.sensor for s in bundle.modalities])
    if reason:
        pytest.skip(reason)
    return hil_rig


@pytest.fixture(scope="session")
def backend_ids(request) -> list[str]:
    """The backends ``--backend`` names, or every one present here. An unknown name stops the run
    with its one line (pytest's usage-error status), not an error in every test that asks."""
    from edgefusion.errors import EdgefusionError
    from edgefusion.hil.backends import selected

    try:
        return selected(request.config.getoption("--backend"))
    except EdgefusionError as err:
        pytest.exit(str(err), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture
def loop_backend(request, backend_ids, bundle, tmp_path):
    """A new backend for one loop run: the first of ``backend_ids`` at ``--precision`` (or a skip
    saying why it cannot run here). For tensorrt-fake, the fake is installed for the test, with an
    engine cache of the test's own."""
    from fake_gpu import installed

    from edgefusion.backends.tensorrt.options import TensorRTOptions
    from edgefusion.hil.backends import FAKE, make, missing

    backend_id, precision = backend_ids[0], request.config.getoption("--precision")
    reason = missing(backend_id)
    if reason:
        pytest.skip(reason)
    if backend_id != FAKE:
        yield make(backend_id, bundle, precision)
        return
    with installed():
        yield make(FAKE, bundle, precision, tensorrt=TensorRTOptions(cache_dir=str(tmp_path / "engines")))
