"""seqcomp: sequence compression for a frozen causal LM, valid by construction and easy to inspect.

The public API: ``seqcomp.load(path)`` -> ``TrainedCompressor`` (``compress``, ``answer``, ``answer_batch``,
``evaluate``) and ``seqcomp.export_run(run, out)``. They are imported on first use, so ``import seqcomp.config``
and the widgets stay light.
"""

import importlib as _importlib

__version__ = "0.1.0"
__all__ = ["load", "TrainedCompressor", "export_run", "__version__"]
_PUBLIC = {"load": "api", "TrainedCompressor": "api", "export_run": "export"}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(_importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'seqcomp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*(k for k in globals() if not k.startswith("_")), *_PUBLIC, "__version__"])
