"""torch.compile where it works, eager where it does not, switchable at run time."""

import functools
import logging
import os

import torch

__all__ = ["maybe_compile"]

logger = logging.getLogger(__name__)

# RETINA_PLUGIN_COMPILE=0 turns compilation off in the whole process (MODEL.FOCAL_RETINA.COMPILE
# does it per model).
_ENABLED = os.environ.get("RETINA_PLUGIN_COMPILE", "1") != "0"


def maybe_compile(fn, what: str):
    """
    Return ``fn`` compiled with torch.compile on first use, or run ``fn`` itself when compilation
    is off or fails (the reason is logged once, e.g. no C++ compiler for the CPU backend).
    Compiled code is cached by torch (in memory, and on disk by Inductor's FX graph cache).
    """
    state = {"compiled": None, "failed": False}

    @functools.wraps(fn)
    def wrapper(*args):
        if not _ENABLED or state["failed"] or torch.compiler.is_compiling():
            return fn(*args)
        try:
            if state["compiled"] is None:
                state["compiled"] = torch.compile(fn, dynamic=None)
            return state["compiled"](*args)
        except Exception as error:  # any backend failure: fall back, never stop training
            state["failed"] = True
            logger.warning(f"torch.compile of the {what} failed, running it eagerly: {error!r}")
            return fn(*args)

    return wrapper
