"""``edgefusion-export bundle --model MODULE:FACTORY --out DIR``: your own model from the command line.

``FACTORY()`` (a function in an importable module; the current folder is on the path) returns a
dict of ``export_bundle``'s keyword arguments: ``model``, ``labels`` and ``modalities`` always,
``calibration``, ``heldout``, ``precisions``, ``keep_fp32``, ``name`` and the rest as it needs.
``--out`` is the bundle folder; ``--name`` overrides the dict's name. Every failure to get there
(no such module, no such function, a factory that raises or returns something else) is one line.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from edgefusion.export.bundling import export_bundle

from edgefusion.backends.base import first_line
from edgefusion.errors import EdgefusionError

REQUIRED = ("model", "labels", "modalities")
_SET_HERE = ("out", "warn")  # from the command line, not the factory


def _import(spec: str, module_name: str):
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise EdgefusionError(
                f"--model {spec}: no module named {module_name!r}; run from the folder that holds it, or install it"
            ) from None
        raise EdgefusionError(f"--model {spec}: {module_name} needs {err.name!r}, which is not installed") from None
    except Exception as err:  # the user's module: whatever it raises on import is the message
        raise EdgefusionError(
            f"--model {spec}: importing {module_name} fails: {type(err).__name__}: {first_line(err)}"
        ) from None


def factory_arguments(spec: str) -> dict:
    """What ``MODULE:FACTORY`` returns, checked to be export_bundle's keyword arguments."""
    module_name, _, attr = spec.partition(":")
    factory = getattr(_import(spec, module_name), attr, None)
    if not callable(factory):
        raise EdgefusionError(f"--model {spec}: {module_name} has no function {attr!r}")
    try:
        args = factory()
    except Exception as err:  # the user's factory: whatever it raises is the message
        raise EdgefusionError(f"--model {spec}: {attr}() fails: {type(err).__name__}: {first_line(err)}") from None
    if not isinstance(args, Mapping):
        raise EdgefusionError(
            f"--model {spec}: {attr}() returned a {type(args).__name__}; return a dict of export_bundle's arguments"
        )
    allowed = set(inspect.signature(export_bundle).parameters) - set(_SET_HERE)
    missing = [k for k in REQUIRED if k not in args]
    unknown = sorted(set(args) - allowed)
    if missing or unknown:
        problem = f"lacks {', '.join(missing)}" if missing else f"has {', '.join(map(repr, unknown))}, not an argument"
        raise EdgefusionError(f"--model {spec}: {attr}()'s dict {problem}; give {', '.join(sorted(allowed))}")
    return dict(args)


def bundle_from_factory(spec: str, out: Path, name: str | None, warn=None) -> Path:
    args = factory_arguments(spec)
    if name:
        args["name"] = name
    return export_bundle(out=out, warn=warn, **args)
