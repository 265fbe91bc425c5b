"""Checkpoints that are never half-written, a resume that never silently starts over or
changes the model, and loading that never runs code from a file.

Detectron2 writes ``model_*.pth`` and ``last_checkpoint`` in place: a crash or a full disk during
a save leaves a truncated file, and ``last_checkpoint`` may name it. Here every write goes to a
temporary file that is renamed over the target only once complete (a failed one stops the run
naming the file and the OS error: ``output_files.py``), and ``--resume`` falls back
to the newest complete checkpoint (with a warning) when ``last_checkpoint`` is empty, unreadable
or names a missing or broken file. A resume into a model of other shapes (e.g. another
``NUM_CLASSES``) is refused (see ``resume.py``), and every file is read as weights only
(see ``safe_load.py``).
"""

import glob
import logging
import os
import zipfile

from detectron2.checkpoint import DetectionCheckpointer

from .output_files import AtomicFile
from .resume import check_model_fits_checkpoint
from .safe_load import load_model_zoo_pickle, load_pycls_checkpoint, load_torch_checkpoint

__all__ = ["SafeCheckpointer"]

logger = logging.getLogger(__name__)

_TAG = "last_checkpoint"
_KEPT = "last_checkpoint still names the previous complete checkpoint; no partial file was left."


class _AtomicWrites:
    """A PathManager whose local files opened for writing appear only once complete."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def __getattr__(self, name):
        return getattr(self._path_manager, name)

    def open(self, path: str, mode: str = "r", **kwargs):
        if "w" in mode and "://" not in path:
            return AtomicFile(path, mode, kept=_KEPT)
        return self._path_manager.open(path, mode, **kwargs)


def is_complete_checkpoint(path: str) -> bool:
    """A ``.pth`` written by torch.save is a zip archive; a truncated one has no central directory."""
    return os.path.isfile(path) and zipfile.is_zipfile(path)


class SafeCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic writes, a resume that falls back to the newest complete
    checkpoint in its folder and refuses a model of other shapes, and weights-only loading.

    Attributes:
        loaded_file: the file the last :meth:`load` read ("" before any).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path_manager = _AtomicWrites(self.path_manager)
        self.loaded_file = ""
        self._resuming = False

    def save(self, name: str, **kwargs):
        """Detectron2's save, called on every worker (as its hooks do): each checkpointable with a
        ``gather_worker_state()`` first collects what differs between workers (a collective), so
        that worker 0's file holds every worker's part."""
        for checkpointable in self.checkpointables.values():
            gather = getattr(checkpointable, "gather_worker_state", None)
            if gather is not None:
                gather()
        return super().save(name, **kwargs)

    def resume_or_load(self, path: str, *, resume: bool = True):
        self._resuming = resume and self.has_checkpoint()
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._resuming = False

    def load(self, path: str, *args, **kwargs):
        self.loaded_file = path
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str):
        # Detectron2 reads .pkl files with a plain pickle.load and .pyth files with torch.load
        # here; both are read as weights only instead. Every other file goes through
        # Detectron2's own handling, which calls _torch_load below.
        if filename.endswith(".pkl"):
            with self.path_manager.open(filename, "rb") as f:
                return load_model_zoo_pickle(f, filename)
        if filename.endswith(".pyth"):
            with self.path_manager.open(filename, "rb") as f:
                return load_pycls_checkpoint(f, filename)
        return super()._load_file(filename)

    def _torch_load(self, f: str):
        return load_torch_checkpoint(f)  # fvcore's torch.load relies on the default weights_only

    def _load_model(self, checkpoint):
        if self._resuming:
            check_model_fits_checkpoint(self.loaded_file, checkpoint["model"], self.model)
        return super()._load_model(checkpoint)

    def has_checkpoint(self) -> bool:
        # Checkpoints without a last_checkpoint still mean "resume", not "start over".
        return super().has_checkpoint() or bool(
            glob.glob(os.path.join(self.save_dir, "model_*.pth"))
        )

    def get_checkpoint_file(self) -> str:
        tag_file = os.path.join(self.save_dir, _TAG)
        try:
            with open(tag_file) as f:
                name = f.read().strip()
        except OSError:
            name = ""
        tagged = os.path.join(self.save_dir, name)
        if name and os.path.dirname(os.path.abspath(tagged)) != os.path.abspath(self.save_dir):
            raise ValueError(
                f"{tag_file} names {name!r}, outside OUTPUT_DIR {self.save_dir!r}; refusing to "
                "resume from it. Fix or delete that file."
            )
        if name and is_complete_checkpoint(tagged):
            return tagged
        problem = (
            f"names {name!r}, which is missing or incomplete"
            if name
            else "is missing, empty or unreadable"
        )
        fallback = self._newest_complete_checkpoint()
        if fallback is None:
            raise FileNotFoundError(
                f"--resume: {tag_file} {problem}, and {self.save_dir!r} holds no complete "
                "checkpoint to fall back to. Delete last_checkpoint to start from iteration 0."
            )
        logger.warning(f"--resume: {tag_file} {problem}; resuming from {fallback} instead.")
        return fallback

    def _newest_complete_checkpoint(self):
        candidates = glob.glob(os.path.join(self.save_dir, "model_*.pth"))
        # model_final.pth is the newest when it exists; model_0001234.pth sort by iteration.
        candidates.sort(key=lambda p: (os.path.basename(p) == "model_final.pth", p), reverse=True)
        return next((path for path in candidates if is_complete_checkpoint(path)), None)
