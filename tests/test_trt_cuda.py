"""The CUDA adapters: cuda-python against the real bindings' signatures (through the fake runtime)
and against the real module with no driver; pycuda against a small fake of ``pycuda.driver``."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from fakes import fake_cudart

from edgefusion.backends.base import BackendError
from edgefusion.backends.tensorrt.cuda import open_cuda
from edgefusion.backends.tensorrt.cuda.pycuda import PyCuda
from edgefusion.backends.tensorrt.graphs import TickGraphs

pytest_plugins = ["fakes.fixtures"]  # the fake_gpu fixture
E = fake_cudart.cudaError_t


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_the_real_bindings_without_a_driver_say_so_in_one_line(no_cuda_device):
    with pytest.raises(BackendError, match=r"^no CUDA driver or GPU here \(") as err:
        open_cuda("cuda-python")
    _one_line(err)


def test_importing_the_backend_loads_neither_tensorrt_nor_cuda():
    code = (
        "import sys, edgefusion.backends, edgefusion.backends.tensorrt, edgefusion.backends.tensorrt.cuda;"
        "from edgefusion.backends.tensorrt import TensorRTBackend;"
        "heavy = [m for m in ('tensorrt', 'cuda.bindings.runtime', 'pycuda.driver') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_missing_library_and_an_unknown_adapter_are_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)  # import raises ModuleNotFoundError
    with pytest.raises(BackendError, match=r"cuda-python is not installed here .*pip install cuda-bindings") as err:
        open_cuda("cuda-python")
    _one_line(err)
    with pytest.raises(BackendError, match=r"unknown CUDA adapter 'cupy'; choose one of cuda-python, pycuda"):
        open_cuda("cupy")


def test_gpu_facts_come_from_the_device_properties(fake_gpu):
    fake_gpu.cudart.props.major, fake_gpu.cudart.props.minor = 7, 2
    gpu = open_cuda("cuda-python").gpu()
    assert gpu.name == "Fake GPU (tests/fakes/fake_cudart.py)"  # NUL padding gone
    assert gpu.compute_capability == (7, 2) and gpu.sm_count == 16 and gpu.total_memory == 8 << 30


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        (
            ("cudaGetDeviceCount", E.cudaErrorNoDevice),
            r"no CUDA driver or GPU here \(cudaGetDeviceCount: no CUDA device\)",
        ),
        (
            ("cudaGetDeviceCount", E.cudaErrorInsufficientDriver),
            r"no CUDA driver or GPU here \(cudaGetDeviceCount: cudaErrorInsufficientDriver: no driver, or one older",
        ),
        (("cudaSetDevice", E.cudaErrorDevicesUnavailable), r"CUDA cudaSetDevice failed: cudaErrorDevicesUnavailable"),
    ],
)
def test_no_device_is_said_at_open(fake_gpu, fail, message):
    fake_gpu.cudart.fail_next = fail
    with pytest.raises(BackendError, match=message) as err:
        open_cuda("cuda-python")
    _one_line(err)


def test_no_device_at_all_is_said_at_open(fake_gpu):
    fake_gpu.cudart.device_count = 0
    with pytest.raises(BackendError, match=r"^no CUDA driver or GPU here \(cudaGetDeviceCount: no CUDA device\)$"):
        open_cuda("cuda-python")


def test_no_driver_library_at_all_is_said_at_open(fake_gpu, monkeypatch):
    from cuda.pathfinder import DynamicLibNotFoundError

    def no_libcuda():
        raise DynamicLibNotFoundError('"cuda" is an NVIDIA driver library ...\nmore lines')

    monkeypatch.setattr(fake_gpu.cudart, "cudaGetDeviceCount", no_libcuda)
    with pytest.raises(BackendError, match=r'^no CUDA driver or GPU here \("cuda" is an NVIDIA driver library') as err:
        open_cuda("cuda-python")
    _one_line(err)


def test_copies_run_on_the_stream_at_synchronize(fake_gpu):
    cuda = open_cuda("cuda-python")
    src = cuda.host_alloc((2, 3), np.float32)
    dst = cuda.host_alloc((2, 3), np.float32)
    src[...] = np.arange(6).reshape(2, 3)
    dst.fill(-1)
    dev = cuda.malloc(src.nbytes)
    stream = cuda.stream_create()
    assert cuda.stream_handle(stream) == int(stream)
    cuda.copy_htod_async(dev, src, stream)
    cuda.copy_dtoh_async(dst, dev, stream)
    assert (dst == -1).all()  # nothing has run yet
    cuda.synchronize(stream)
    np.testing.assert_array_equal(dst, src)
    cuda.copy_htod(dev, np.full((2, 3), 7, np.float32))  # synchronous
    cuda.copy_dtoh_async(dst, dev, stream)
    cuda.synchronize(stream)
    assert (dst == 7).all()
    for array in (src, dst):
        cuda.free_host(array)
    cuda.free(dev)
    cuda.stream_destroy(stream)
    assert set(fake_gpu.cudart.live().values()) == {0}


def test_a_cuda_error_is_one_line_naming_the_call_and_the_error(fake_gpu):
    cuda = open_cuda("cuda-python")
    src = cuda.host_alloc((4,), np.float32)
    dev, stream = cuda.malloc(16), cuda.stream_create()
    fake_gpu.cudart.fail_next = ("cudaMemcpyAsync", E.cudaErrorInvalidValue)
    with pytest.raises(BackendError) as err:
        cuda.copy_htod_async(dev, src, stream)
    assert _one_line(err) == "CUDA cudaMemcpyAsync failed: cudaErrorInvalidValue"
    cuda.copy_htod_async(dev, src, stream)  # the injected failure was for one call only


def test_the_fake_refuses_what_a_device_would_not_do(fake_gpu):
    """The fake's own checks can fail: a pageable async copy, a copy past a block's end, a
    synchronize and an allocation inside a capture."""
    cuda = open_cuda("cuda-python")
    dev, stream = cuda.malloc(16), cuda.stream_create()
    pageable = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="needs an array from host_alloc"):
        cuda.copy_htod_async(dev, pageable, stream)  # the adapter's own check
    h2d = fake_cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    assert fake_gpu.cudart.cudaMemcpyAsync(dev, pageable.ctypes.data, 16, h2d, stream) == (E.cudaErrorInvalidValue,)
    with pytest.raises(BackendError, match="cudaMemcpyAsync failed: cudaErrorInvalidValue"):
        cuda.copy_htod_async(dev, cuda.host_alloc((5,), np.float32), stream)  # 20 bytes into 16
    cuda.begin_capture(stream)
    with pytest.raises(BackendError, match="cudaStreamSynchronize failed: cudaErrorStreamCaptureUnsupported"):
        cuda.synchronize(stream)
    with pytest.raises(BackendError, match="cudaMalloc failed: cudaErrorStreamCaptureUnsupported"):
        cuda.malloc(16)


def test_every_fake_call_binds_to_the_real_signature(fake_gpu):
    """The check that keeps the adapter honest: a call that drifted from the real API raises."""
    cudart = fake_gpu.cudart
    ok = cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking)
    assert ok[0] is E.cudaSuccess and isinstance(ok[1], cudart.cudaStream_t)
    with pytest.raises(TypeError):
        cudart.cudaMemcpyAsync(0, 0, 4, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)  # no stream
    with pytest.raises(TypeError):
        cudart.cudaStreamBeginCapture(ok[1])  # no mode
    with pytest.raises(TypeError):
        cudart.cudaHostAlloc(size=16, flag=0)  # the real keyword is flags


def test_a_graph_is_captured_once_and_each_launch_runs_it_again(fake_gpu):
    cuda = open_cuda("cuda-python")
    src, dst = cuda.host_alloc((3,), np.float32), cuda.host_alloc((3,), np.float32)
    dev, stream = cuda.malloc(src.nbytes), cuda.stream_create()

    def tick(_):
        cuda.copy_htod_async(dev, src, stream)
        cuda.copy_dtoh_async(dst, dev, stream)

    graphs = TickGraphs(cuda, stream)
    for value in (1.0, 2.0, 3.0):
        src.fill(value)
        graphs.run(("k",), (dev,), tick, None)
        cuda.synchronize(stream)
        assert (dst == value).all()  # the replay reads the host buffer as it is now
    assert (graphs.captures, graphs.launches) == (1, 3)
    assert fake_gpu.cudart.live()["graphs"] == 0, "the captured graph is freed once instantiated"
    graphs.run(("k",), (dev + 4,), tick, None)  # an address changed: captured again, the old one freed
    assert graphs.captures == 2 and fake_gpu.cudart.live()["graph_execs"] == 1
    graphs.run(("other",), (dev,), tick, None)
    assert graphs.captures == 3 and fake_gpu.cudart.live()["graph_execs"] == 2
    graphs.close()
    assert fake_gpu.cudart.live()["graph_execs"] == 0
    modes = [d for op, _, d in fake_gpu.cudart.log if op == "cudaStreamBeginCapture"]
    assert len(modes) == 3


def test_a_capture_that_fails_half_way_leaves_the_stream_usable(fake_gpu):
    cuda = open_cuda("cuda-python")
    src, dev, stream = cuda.host_alloc((3,), np.float32), cuda.malloc(12), cuda.stream_create()
    graphs = TickGraphs(cuda, stream)

    def tick(_):
        cuda.copy_htod_async(dev, src, stream)

    fake_gpu.cudart.fail_next = ("cudaMemcpyAsync", E.cudaErrorInvalidValue)
    with pytest.raises(BackendError, match="cudaMemcpyAsync failed"):
        graphs.run(("k",), (), tick, None)
    assert graphs.captures == 0 and fake_gpu.cudart.live()["graph_execs"] == 0
    cuda.synchronize(stream)  # not capturing any more
    graphs.run(("k",), (), tick, None)
    assert graphs.captures == 1


class FakePycudaDriver(SimpleNamespace):
    """FAKE ``pycuda.driver``: the handful of calls the adapter makes, on host memory."""

    class Error(Exception):
        pass

    def __init__(self, no_device=False):
        super().__init__(calls=[], freed=[], device_attribute=SimpleNamespace(MULTIPROCESSOR_COUNT="SMs"))
        self.no_device = no_device
        self._memory = {}

    def init(self):
        if self.no_device:
            raise self.Error("cuInit failed: no CUDA-capable device is detected")

    def Device(self, ordinal):  # noqa: N802  (pycuda's name)
        drv = self
        return SimpleNamespace(
            name=lambda: "Fake Orin (FakePycudaDriver)",
            compute_capability=lambda: (8, 7),
            get_attribute=lambda attr: {"SMs": 8}[attr],
            total_memory=lambda: 1 << 30,
            retain_primary_context=lambda: SimpleNamespace(
                push=lambda: drv.calls.append("push"),
                pop=lambda: drv.calls.append("pop"),
                detach=lambda: drv.calls.append("detach"),
            ),
        )

    def pagelocked_empty(self, shape, dtype):
        drv = self

        class HostAllocation(bytearray):
            def free(self):
                drv.freed.append("host")

        return np.ndarray(shape, dtype, buffer=HostAllocation(int(np.prod(shape)) * np.dtype(dtype).itemsize))

    def mem_alloc(self, nbytes):
        block = np.zeros(nbytes, np.uint8)
        drv = self

        class DeviceAllocation:
            def __int__(self):
                return block.ctypes.data

            def free(self):
                drv.freed.append("device")

        self._memory[block.ctypes.data] = block
        return DeviceAllocation()

    def Stream(self):  # noqa: N802
        return SimpleNamespace(handle=42, synchronize=lambda: self.calls.append("synchronize"))

    def memcpy_htod_async(self, dst, src, stream):
        self._memory[dst][: src.nbytes] = src.view(np.uint8).ravel()
        self.calls.append("htod")

    def memcpy_dtoh_async(self, dst, src, stream):
        dst.view(np.uint8).ravel()[:] = self._memory[src][: dst.nbytes]
        self.calls.append("dtoh")

    def memcpy_htod(self, dst, src):
        if src.nbytes > self._memory[dst].size:
            raise self.Error("cuMemcpyHtoD failed: invalid argument")
        self._memory[dst][: src.nbytes] = src.view(np.uint8).ravel()


def test_pycuda_adapter_round_trip_and_errors():
    drv = FakePycudaDriver()
    cuda = PyCuda(drv)
    assert cuda.gpu() == cuda.gpu().__class__("Fake Orin (FakePycudaDriver)", (8, 7), 8, 1 << 30)
    assert not cuda.has_graphs and drv.calls == ["push"]
    src, dst = cuda.host_alloc((4,), np.float32), cuda.host_alloc((4,), np.float32)
    src[...] = [1, 2, 3, 4]
    dev, stream = cuda.malloc(16), cuda.stream_create()
    assert cuda.stream_handle(stream) == 42
    cuda.copy_htod_async(dev, src, stream)
    cuda.copy_dtoh_async(dst, dev, stream)
    cuda.synchronize(stream)
    np.testing.assert_array_equal(dst, src)
    with pytest.raises(BackendError) as err:
        cuda.copy_htod(dev, np.zeros(8, np.float32))
    assert _one_line(err) == "CUDA memcpy_htod failed: cuMemcpyHtoD failed: invalid argument"
    with pytest.raises(NotImplementedError, match="pycuda has no CUDA graphs"):
        cuda.begin_capture(stream)
    cuda.free(dev)
    cuda.free_host(src)
    cuda.stream_destroy(stream)
    cuda.close()
    assert drv.freed == ["device", "host"] and drv.calls[-3:] == ["synchronize", "pop", "detach"]


def test_pycuda_without_a_device_says_so():
    with pytest.raises(BackendError, match=r"^no CUDA driver or GPU here \(cuInit failed: no CUDA-capable device"):
        PyCuda(FakePycudaDriver(no_device=True))


def test_pycuda_not_installed_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(BackendError, match=r"^pycuda is not installed here \(.*\): pip install pycuda on the device"):
        open_cuda("pycuda")
