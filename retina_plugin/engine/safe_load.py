"""Load checkpoint files without running code that they carry.

Unpickling can call any Python function a file names, so a checkpoint from an untrusted source
can run code when it is loaded. fvcore's ``Checkpointer`` calls ``torch.load`` without
``weights_only`` (safe only because PyTorch >= 2.6 defaults to it, and only until someone sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``), and Detectron2 reads ``.pkl`` model-zoo files with a plain
``pickle.load``. Here:

- ``.pth`` (and every other torch file) is read with ``torch.load(weights_only=True)``: tensors,
  containers and numbers only;
- ``.pkl`` (Detectron2 / Detectron1 model-zoo weights, e.g. ``ImageNetPretrained/MSRA/R-50.pkl``)
  is read with an unpickler that knows only what those files hold: dicts, lists, strings,
  numbers and numpy arrays.

Anything else is refused with :class:`UnsafeCheckpointError`, naming the file and what it asked
for, before any of it runs.
"""

import pickle
import re
from typing import Any, BinaryIO, Union

import torch

__all__ = [
    "UnsafeCheckpointError",
    "load_pickled_weights",
    "load_torch_checkpoint",
    "load_model_zoo_pickle",
    "load_pycls_checkpoint",
]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that can only be loaded by unpickling arbitrary Python objects."""


# Everything a numpy-array pickle needs, under numpy 1 (numpy.core) and numpy 2 (numpy._core)
# names; Python 3 pickles of protocol <= 2 write bytes as _codecs.encode(str, "latin1").
_PICKLED_WEIGHTS_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
    }
)

_REFUSED = (
    "refused, since unpickling it would run code that the file chooses. Weights need only "
    "tensors (numpy arrays in a .pkl): if you trust this file, re-save its weights as plain "
    "tensors, e.g. torch.save({'model': state_dict}, 'weights.pth'), and load that."
)


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, filename: str):
        # latin1, as Detectron2: Python 2 pickles (Detectron1 / Caffe2 weights) hold numpy data
        # as 8-bit strings.
        super().__init__(file, encoding="latin1")
        self._filename = filename

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLED_WEIGHTS_GLOBALS:
            raise UnsafeCheckpointError(
                f"{self._filename}: it names the Python global '{module}.{name}'; {_REFUSED}"
            )
        return super().find_class(module, name)


def load_pickled_weights(file: BinaryIO, filename: str) -> Any:
    """``pickle.load(file, encoding="latin1")`` restricted to dicts, lists, strings, numbers and
    numpy arrays; raises :class:`UnsafeCheckpointError` naming `filename` and the global."""
    return _WeightsUnpickler(file, filename).load()


def load_torch_checkpoint(file: Union[str, BinaryIO], filename: str = "") -> Any:
    """``torch.load(file, map_location="cpu", weights_only=True)``; a file that needs more is
    refused with :class:`UnsafeCheckpointError` naming `filename` (default: `file`) and the
    Python global it asked for."""
    filename = filename or str(file)
    try:
        return torch.load(file, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as error:
        unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        reason = (
            f"it names the Python global '{unsupported.group(1)}'"
            if unsupported
            else f"torch.load(weights_only=True) failed ({_last_line(error)})"
        )
        raise UnsafeCheckpointError(f"{filename}: {reason}; {_REFUSED}") from None


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if "WeightsUnpickler error" in line), lines[-1])


def load_model_zoo_pickle(file: BinaryIO, filename: str) -> dict:
    """
    A ``.pkl`` model-zoo file read by :func:`load_pickled_weights`, as Detectron2's checkpointer
    expects it: a Detectron2 model-zoo file (with "model" and "__author__") as it is; a Caffe2 /
    Detectron1 file as its "blobs" (if any) without the "_momentum" entries, marked for
    Detectron2's name-matching heuristics.
    """
    data = load_pickled_weights(file, filename)
    if "model" in data and "__author__" in data:
        return data
    weights = data.get("blobs", data)
    weights = {name: value for name, value in weights.items() if not name.endswith("_momentum")}
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}


def load_pycls_checkpoint(file: BinaryIO, filename: str) -> dict:
    """A pycls ``.pyth`` file read as weights only: its "model_state" less the BatchNorm
    "num_batches_tracked" counters, marked for Detectron2's name-matching heuristics."""
    data = load_torch_checkpoint(file, filename)
    if "model_state" not in data:
        raise ValueError(
            f"Cannot load .pyth file {filename}: pycls checkpoints hold 'model_state'."
        )
    weights = {
        name: value
        for name, value in data["model_state"].items()
        if not name.endswith("num_batches_tracked")
    }
    return {"model": weights, "__author__": "pycls", "matching_heuristics": True}
