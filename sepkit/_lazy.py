"""Third-party modules imported on first use, so that a linear EEG fit never loads torch.

torch (with a CUDA build) adds about 480 MiB of resident memory and seconds of
start-up to a process before any data are read, which is more than the linear
EEG fit itself needs (benchmarks/README.md, "EEG: high density"). The modules
that both the torch families and the numpy linear family use (stateless math,
preprocessing, the file schema) reach torch through :data:`torch`, which
imports it on the first attribute read. Modules that define torch modules
(``sepkit.models``, ``sepkit.train``) import torch as usual: the linear
family's path does not import them.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """A stand-in for a module that imports it when one of its attributes is first read.

    Parameters
    ----------
    name : str
        The module's import name, e.g. ``"torch"``.

    Notes
    -----
    Unlike :class:`importlib.util.LazyLoader` it is not placed in
    ``sys.modules``: libraries that test ``"torch" in sys.modules`` (array-API
    helpers of scikit-learn and SciPy) then see torch only once it is loaded.
    """

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        # Only called for attributes not found on the stand-in itself.
        if (attr.startswith("__") and attr.endswith("__")) or "_name" not in self.__dict__:
            # copy/pickle probes must not import the module (nor recurse on an
            # instance made without __init__).
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded"
        return f"<LazyModule {self._name!r} ({state})>"


torch = LazyModule("torch")
