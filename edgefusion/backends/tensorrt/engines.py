"""Placeholder until the engines helper's module is merged: the names the runner imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Engines:
    runtime: Any  # trt.Runtime: must outlive the engines
    engines: dict[str, Any]  # graph role (each modality name, and "head") -> trt.ICudaEngine
    built: list[str]  # roles built now
    cached: list[str]  # roles loaded from the cache


def load_engines(trt, bundle, precision, options, gpu, build: bool = True) -> Engines:
    raise NotImplementedError("engines.load_engines: the engines helper's version replaces this placeholder")
