"""torch.compile where it works, eager where it does not, switchable at run time."""

import functools
import logging
import os
from collections.abc import Sequence

import torch
from detectron2.utils import comm

__all__ = ["maybe_compile"]

logger = logging.getLogger(__name__)

# RETINA_PLUGIN_COMPILE=0 turns compilation off in the whole process (MODEL.FOCAL_RETINA.COMPILE
# does it per model).
_ENABLED = os.environ.get("RETINA_PLUGIN_COMPILE", "1") != "0"


def maybe_compile(fn, what: str, dynamic_dims: Sequence[tuple[int, int]] = (), backend="inductor"):
    """
    Return ``fn`` compiled with torch.compile on first use, or run ``fn`` itself when compilation
    is off or fails. Compiled code is cached by torch (in memory, and on disk by Inductor's FX
    graph cache).

    Args:
        fn: the function; `what` names it in the log.
        dynamic_dims: (argument index, dimension) pairs compiled for any size, such as the
            anchor dimension M of a loss: the image sizes of a multi-scale batch change M, and
            a static first compile would compile again for the next M, on every rank. Other
            dimensions follow torch.compile's default (static first, dynamic once they change).
        backend: torch.compile's backend.

    Each compilation after the first (a new graph for new shapes or dtypes) is logged at INFO,
    with the input shapes. A failure is logged once, as a warning naming the rank and the error,
    and the process then runs ``fn`` eagerly (e.g. no C++ compiler for the CPU backend).
    The wrapper's ``num_compiles()`` counts the graphs compiled so far.
    """
    state = {"compiled": None, "failed": False, "compiles": 0}

    def counting_backend(graph, example_inputs):
        state["compiles"] += 1
        if state["compiles"] > 1:
            shapes = [tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)]
            logger.info(
                f"torch.compile of the {what}: compiled again (graph {state['compiles']}), "
                f"for inputs of shapes {shapes}"
            )
        return torch._dynamo.lookup_backend(backend)(graph, example_inputs)

    @functools.wraps(fn)
    def wrapper(*args):
        if not _ENABLED or state["failed"] or torch.compiler.is_compiling():
            return fn(*args)
        try:
            if state["compiled"] is None:
                state["compiled"] = torch.compile(fn, dynamic=None, backend=counting_backend)
            for index, dim in dynamic_dims:
                if args[index].dim() > dim:
                    torch._dynamo.maybe_mark_dynamic(args[index], dim)
            return state["compiled"](*args)
        except Exception as error:  # any backend failure: fall back, never stop training
            state["failed"] = True
            logger.warning(fallback_message(what, error))
            return fn(*args)

    wrapper.num_compiles = lambda: state["compiles"]
    return wrapper


def fallback_message(what: str, error: BaseException) -> str:
    """The warning of a failed compilation: the rank, what failed and the root error."""
    while error.__cause__ is not None or getattr(error, "inner_exception", None) is not None:
        error = getattr(error, "inner_exception", None) or error.__cause__
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (
        f"Rank {comm.get_rank()}: torch.compile of the {what} failed, so this process runs it "
        f"eagerly from now on (slower, with more memory for its temporaries): "
        f"{type(error).__name__}: {reason}"
    )
