"""The files a run writes into OUTPUT_DIR, written so that a full disk (no space, a quota, a
file-size limit) stops the run with the file and the OS error named, and leaves no half-written
file behind.

- Checkpoints, ``last_checkpoint`` and ``final_results.json`` are written to a temporary file that
  is renamed over the target only once complete (:class:`AtomicFile`); a failed write removes it.
- ``metrics.json`` is appended a whole line at a time (:class:`MetricsJSONWriter`); a failed
  append is cut back, so the file keeps every complete line written before.

``torch.save`` turns a failed write into ``RuntimeError: ... unexpected pos 704 vs 598``; the
file object handed to it records the OS error underneath so that the message can say it.
"""

import os

from detectron2.utils.events import JSONWriter

__all__ = ["AtomicFile", "MetricsJSONWriter", "OutputWriteError", "write_text_atomically"]

_RESUME = (
    "Free space on that disk (or raise the quota or file-size limit), then run the same command "
    "with --resume to continue."
)


class OutputWriteError(OSError):
    """A file of the run could not be written; the message names it, the OS error and what was
    kept."""

    def __init__(self, path: str, os_error: OSError, kept: str):
        reason = f"[Errno {os_error.errno}] {os_error.strerror}" if os_error.errno else os_error
        super().__init__(
            " ".join(filter(None, (f"Could not write {path}: {reason}.", kept, _RESUME)))
        )
        self.path, self.os_error = path, os_error  # (not errno/filename: they would reformat it)


class _RecordingFile:
    """A file object that remembers the first OSError its writes raised."""

    def __init__(self, file):
        self._file = file
        self.os_error = None

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as e:
            self.os_error = self.os_error or e
            raise

    def __getattr__(self, name):
        return getattr(self._file, name)


class AtomicFile:
    """``with AtomicFile(path, mode, kept) as f``: f writes `path`.tmp-PID, renamed to `path`
    once complete and on disk. When a write fails for an OS reason the temporary file is removed
    and :class:`OutputWriteError` names `path` and the OS error, followed by `kept` (what the
    failure left intact)."""

    def __init__(self, path: str, mode: str, kept: str = ""):
        self._path, self._mode, self._kept = path, mode, kept
        self._tmp_path = f"{path}.tmp-{os.getpid()}"

    def __enter__(self):
        self._file = _RecordingFile(open(self._tmp_path, self._mode))
        return self._file

    def __exit__(self, exc_type, exc, traceback):
        os_error = None
        try:
            if exc_type is None:
                self._file.flush()
                os.fsync(self._file.fileno())
        except OSError as e:
            os_error = e
        finally:
            try:
                self._file.close()
            except OSError as e:  # flushing what a failed write left buffered
                os_error = os_error or e
        if exc_type is None and os_error is None:
            os.replace(self._tmp_path, self._path)
            return False
        try:
            os.remove(self._tmp_path)
        except FileNotFoundError:
            pass
        os_error = self._file.os_error or os_error or (exc if isinstance(exc, OSError) else None)
        if os_error is not None and not isinstance(exc, OutputWriteError):
            raise OutputWriteError(self._path, os_error, self._kept) from (exc or os_error)
        return False


def write_text_atomically(path: str, text: str, kept: str = ""):
    """Write `text` to `path` through :class:`AtomicFile`."""
    with AtomicFile(path, "w", kept) as f:
        f.write(text)


class _WholeLinesFile:
    """An append-only file whose ``write``s reach the disk at ``flush``, all of them or none."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pending = []
        self.failed = False

    def write(self, text: str):
        self._pending.append(text)

    def flush(self):
        data, self._pending = "".join(self._pending).encode(), []
        if self.failed or not data:
            return
        size = os.fstat(self._fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            self.failed = True  # the run is stopping: later writes (after_train's) are dropped
            os.ftruncate(self._fd, size)
            kept = f"{os.path.basename(self.path)} keeps every complete line written before."
            raise OutputWriteError(self.path, e, kept) from e

    def fileno(self) -> int:
        return self._fd

    def close(self):
        try:
            self.flush()
        finally:
            os.close(self._fd)


class MetricsJSONWriter(JSONWriter):
    """Detectron2's JSONWriter (``metrics.json``), appending whole lines: a failed write stops
    the run naming the file and the OS error, and is cut back out of the file."""

    def __init__(self, json_file: str, window_size: int = 20):
        super().__init__(json_file, window_size)
        self._file_handle.close()  # Detectron2's buffered handle; appends go through ours
        self._file_handle = _WholeLinesFile(json_file)
