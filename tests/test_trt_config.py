"""The ``[tensorrt]`` table and ``[runtime] backend``: read into Config.tensorrt (TensorRTOptions),
every number range-checked, every wrong key, type or value one line naming the key."""

from __future__ import annotations

import dataclasses

import pytest
from cli_check import cli, refused

from edgefusion.backends.tensorrt.options import CUDA_ADAPTERS, TensorRTOptions
from edgefusion.config import LIMITS, load_config, parse_config
from edgefusion.errors import ConfigError


def test_the_table_is_read_into_tensorrt_options(tmp_path):
    path = tmp_path / "robot.toml"
    path.write_text(
        '[runtime]\nbackend = "tensorrt"\nprecision = "int8"\n'
        '[tensorrt]\ncache_dir = "/var/cache/engines"\nworkspace_mb = 512\nmax_cache_mb = 64\n'
        'cuda_graphs = false\nbuild_at_start = false\ncuda = "pycuda"\n'
    )
    cfg = load_config(path)
    assert cfg.runtime.backend == "tensorrt"
    assert cfg.tensorrt == TensorRTOptions("/var/cache/engines", 512, 64, False, False, "pycuda")
    assert "tensorrt" in cfg.given
    assert parse_config({}).tensorrt == TensorRTOptions(), "no table: the defaults"


def test_every_number_has_the_range_a_build_can_live_with():
    numbers = [
        f.name for f in dataclasses.fields(TensorRTOptions) if type(getattr(TensorRTOptions(), f.name)) in (int, float)
    ]
    assert sorted(numbers) == sorted(LIMITS[TensorRTOptions])
    assert LIMITS[TensorRTOptions]["workspace_mb"][:2] == (16, 1 << 20)
    assert LIMITS[TensorRTOptions]["max_cache_mb"][:2] == (64, 1 << 22)
    for key, (lo, hi, _) in LIMITS[TensorRTOptions].items():
        for ok in (lo, hi):
            assert getattr(parse_config({"tensorrt": {key: ok}}).tensorrt, key) == ok


def _bad_cases():
    defaults = TensorRTOptions()
    for f in dataclasses.fields(TensorRTOptions):
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            values = ["yes", 1, [True]]
        elif isinstance(default, str):
            values = [5, ["a"], {"a": 1}]
        else:
            lo, hi, _ = LIMITS[TensorRTOptions][f.name]
            values = ["3", 2.5, int(lo) - 1, int(hi) + 1, 10**30, -(10**30), True]
        for value in values:
            yield pytest.param(f.name, value, id=f"{f.name}={value!r}"[:40])


@pytest.mark.parametrize("key,value", list(_bad_cases()))
def test_a_wrong_type_or_an_absurd_value_is_one_line_naming_the_key(key, value):
    with pytest.raises(ConfigError) as err:
        parse_config({"tensorrt": {key: value}}, "robot.toml")
    message = str(err.value)
    assert message.startswith(f"robot.toml: [tensorrt]: {key} must be ") and "\n" not in message


def test_an_unknown_key_an_unknown_adapter_and_an_unknown_backend_name_what_is_valid():
    with pytest.raises(
        ConfigError, match=r"\[tensorrt\]: unknown key 'workspace'; valid keys: cache_dir, workspace_mb"
    ):
        parse_config({"tensorrt": {"workspace": 1}})
    with pytest.raises(ConfigError) as err:
        parse_config({"tensorrt": {"cuda": "cupy"}})
    assert str(err.value) == f"config: [tensorrt]: cuda must be one of {', '.join(CUDA_ADAPTERS)}, got 'cupy'"
    with pytest.raises(ConfigError, match=r"\[runtime\]: backend must be one of onnxruntime, tensorrt"):
        parse_config({"runtime": {"backend": "trt"}})
    with pytest.raises(ConfigError, match=r"\[tensorrt\] must be a table"):
        parse_config({"tensorrt": 3})


def test_run_refuses_a_bad_table_in_one_line_before_anything_starts(tmp_path):
    path = tmp_path / "robot.toml"
    path.write_text("[tensorrt]\nworkspace_mb = 1e9\n")
    refused(cli("run", "--config", str(path), "--seconds", "1"), "[tensorrt]: workspace_mb must be an int")
    path.write_text("[tensorrt]\nworkspace_mb = 8\n")
    refused(cli("run", "--config", str(path), "--seconds", "1"), "workspace_mb must be between 16 and 1048576")
