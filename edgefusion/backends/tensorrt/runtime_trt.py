"""Placeholder until the engines helper's module is merged: the signature the runner imports."""

from __future__ import annotations


def import_tensorrt():
    raise NotImplementedError("runtime_trt.import_tensorrt: the engines helper's version replaces this placeholder")
