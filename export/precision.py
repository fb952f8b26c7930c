"""fp16 without casts in the user's code: a half copy whose modules cast their inputs at their own door.

A user's encoder takes the float32 tensor the runtime delivers and never casts: ``model.half()``
alone then fails ("Input type (float) and bias type (c10::Half)"). Here every module that owns
floating parameters or buffers gets a forward pre-hook casting its floating inputs to its own
dtype, so each precision boundary gets exactly one Cast wherever it falls: at the first layer
(fp32 input → fp16), into and out of a module kept fp32 (an audio front end whose power spectrum
would overflow fp16), and nowhere between two fp16 layers. Parameter-free operations between
modules run in whatever dtype reaches them, which is the dtype of the module before. The same
module run in PyTorch is the true-fp16 reference of the exported graph.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from edgefusion.errors import EdgefusionError

KeepSpec = str | type


def kept_paths(model: nn.Module, keep: Iterable[KeepSpec]) -> tuple[str, ...]:
    """The dotted paths of ``model``'s submodules that ``keep`` names: a str is a submodule's
    name or the tail of its dotted path ("frontend", "encoders.mic.frontend"), a type matches
    every submodule of that type. A name that matches nothing is an error (a typo would
    otherwise export a graph that overflows)."""
    paths: list[str] = []
    for spec in keep:
        if isinstance(spec, str):
            found = [p for p, _ in model.named_modules() if p and (p == spec or p.endswith("." + spec))]
        elif isinstance(spec, type) and issubclass(spec, nn.Module):
            found = [p for p, m in model.named_modules() if p and isinstance(m, spec)]
        else:
            raise EdgefusionError(f"keep_fp32 entry {spec!r} is neither a submodule name nor an nn.Module type")
        if not found:
            what = spec if isinstance(spec, str) else spec.__name__
            raise EdgefusionError(f"keep_fp32 names {what!r}, which is no submodule of the model; give a module name")
        paths += [p for p in found if p not in paths]
    return tuple(paths)


def under(path: str, roots: Iterable[str]) -> bool:
    """``path`` is one of ``roots`` or inside one of them."""
    return any(path == r or path.startswith(r + ".") for r in roots)


def _own_dtype(module: nn.Module) -> torch.dtype | None:
    for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
        if t.is_floating_point():
            return t.dtype
    return None


def _cast_at_door(dtype: torch.dtype):
    def cast(x):
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    def hook(_module, args, kwargs):
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook


def to_half(model: nn.Module, keep: Iterable[KeepSpec] = ()) -> nn.Module:
    """An fp16 copy of ``model`` (eval mode) with the submodules ``keep`` names left fp32 and a
    cast at the door of every module that owns weights."""
    half = copy.deepcopy(model).half().eval()
    for path in kept_paths(half, keep):
        half.get_submodule(path).float()
    for module in half.modules():
        dtype = _own_dtype(module)
        if dtype is not None:
            module.register_forward_pre_hook(_cast_at_door(dtype), with_kwargs=True)
    return half
