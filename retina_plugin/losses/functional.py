"""The sigmoid focal loss of Lin et al. (2017), computed so that it stays finite everywhere.

Shape shorthand: M anchors, K classes; ``*`` is any shape.

fvcore's and torchvision's implementations compute ``(1 - p_t) ** gamma`` by autograd. For
gamma in (0, 1) (the paper's Table 1b rows 0.1, 0.2, 0.5) the derivative of that power,
``gamma * (1 - p_t) ** (gamma - 1)``, is infinite once ``1 - p_t`` rounds to 0 (|x| >= 17 in
float32), and ``inf * 0`` poisons the gradient with NaN. Here the gradient is written out in the
closed form of the paper's appendix B, in which that singular factor cancels, so values and
gradients are finite for every gamma >= 0 and every finite logit.

The gradient is computed in the forward pass, together with the loss, and is all that is kept
for the backward pass: one elementwise pass instead of a graph of a dozen (M, K) temporaries.
"""

import functools
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from ..compile import maybe_compile
from .base import check_alpha

__all__ = ["sigmoid_focal_loss", "sigmoid_focal_loss_from_labels"]

_REDUCTIONS = ("none", "mean", "sum")


def _focal_loss_and_grad(logits: Tensor, targets: Tensor, weights, alpha_t, gamma: Tensor):
    """
    Elementwise weights * FL and its derivative with respect to the logits. ``alpha_t`` is the
    pair (alpha for y = 1, alpha for y = 0) of 0-dim tensors (see :func:`_constants`).

    d/dx [(1-p_t)^g * ce] = (1-p_t)^g * [(p - y) + g * (1 - 2y) * p(1-p)/(1-p_t) * ce], where
    p(1-p)/(1-p_t) lies in [0, 1] (it is p for y = 1 and 1 - p for y = 0). Where 1 - p_t
    underflows to 0 its limit is 1, and (1-p_t)^g = 0 there anyway for g > 0.
    """
    p = torch.sigmoid(logits)
    p_neg = torch.sigmoid(-logits)  # 1 - p, exact where p rounds to 1
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    one_minus_p_t = targets * p_neg + (1 - targets) * p
    modulator = one_minus_p_t.pow(gamma)
    weights = weights * (alpha_t[0] * targets + alpha_t[1] * (1 - targets))  # soft: interpolated
    ratio = torch.where(one_minus_p_t > 0, p * p_neg / one_minus_p_t, 1.0)
    loss = weights * modulator * ce
    grad = weights * modulator * ((p - targets) + gamma * (1 - 2 * targets) * ratio * ce)
    return loss, grad


def _binary_focal_loss_and_grad(logits: Tensor, positive: Tensor, weights, alpha_t, gamma: Tensor):
    """
    :func:`_focal_loss_and_grad` for 0/1 targets (`positive`: bool), with 3 transcendental
    functions per element instead of 6. With x_t = x for y = 1 and -x for y = 0:
    ce = -log p_t = softplus(-x_t), log(1 - p_t) = -softplus(x_t), both from e = exp(-|x|), and
    dFL/dx = s * (1-p_t)^g * (-g * p_t * ce - (1 - p_t)), s = +1 for y = 1 and -1 for y = 0
    (the paper's appendix B).
    """
    x_t = torch.where(positive, logits, -logits)
    e = torch.exp(-logits.abs())
    log1p_e = torch.log1p(e)
    ce = torch.relu(-x_t) + log1p_e
    modulator = torch.exp(-gamma * (torch.relu(x_t) + log1p_e))  # (1 - p_t)^g
    q = torch.where(x_t >= 0, e, 1.0) / (1 + e)  # 1 - p_t
    weights = weights * torch.where(positive, alpha_t[0], alpha_t[1])
    weighted = weights * modulator
    grad = weighted * (-gamma * (1 - q) * ce - q)
    return weighted * ce, torch.where(positive, grad, -grad)


def _constants(alpha, gamma: float, like: Tensor):
    """
    alpha_t for y = 1 and for y = 0, and gamma, as tensors on the device and of the dtype of
    `like`: 0-dim, or (K,) for a per-class alpha (a tuple of K floats; those kernels broadcast
    them over the (M, K) logits). As tensors they are inputs of the compiled kernels, not
    constants baked into them: torch.compile (2.14, CPU) makes Python floats dynamic after
    seeing two values, and the kernel it then built computed a wrong loss for a third alpha
    (tests/test_focal_loss.py::test_compiled_kernels_across_alpha_and_gamma).

    They are built once per (alpha, gamma, dtype, device) and then reused: building them is a
    host-to-device copy, which on CUDA blocks until the device catches up, on every call.
    The cached tensors are shared: never modify them in place.
    """
    return _cached_constants(alpha, float(gamma), like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _cached_constants(alpha, gamma: float, dtype: torch.dtype, device: torch.device):
    options = {"dtype": dtype, "device": device}
    # Ordinary tensors even when first built under torch.inference_mode, so that training can
    # use them afterwards.
    with torch.inference_mode(False), torch.no_grad():
        if isinstance(alpha, tuple):
            alpha_pos = torch.tensor(alpha, **options)
            return alpha_pos, 1 - alpha_pos, torch.tensor(gamma, **options)
        alpha_pos, alpha_neg = (alpha, 1 - alpha) if alpha >= 0 else (1.0, 1.0)
        return torch.tensor([alpha_pos, alpha_neg, gamma], **options).unbind()


def _focal_loss_rows_and_grad_from_labels(
    logits: Tensor, labels: Tensor, alpha_pos: Tensor, alpha_neg: Tensor, gamma: Tensor
):
    """
    (M, K) logits, (M,) labels in {-1: ignored, 0..K-1: class, K: background} -> the (M,) loss
    of each anchor and the (M, K) gradient.
    """
    classes = torch.arange(logits.shape[1], device=logits.device)
    positive = labels[:, None] == classes  # (M, K) one-hot, never stored
    weights = (labels >= 0).to(logits.dtype)[:, None]  # (M, 1): ignored anchors count 0
    alpha_t = (alpha_pos, alpha_neg)
    loss, grad = _binary_focal_loss_and_grad(logits, positive, weights, alpha_t, gamma)
    return loss.sum(dim=1), grad


# The anchor count M changes with the image sizes of every multi-scale batch: compiled for any M.
_compiled_rows_and_grad = maybe_compile(
    _focal_loss_rows_and_grad_from_labels, "focal loss", dynamic_dims=((0, 0), (1, 0))
)


def _labels_kernel(logits: Tensor, labels: Tensor, alpha, gamma: float, compiled: bool):
    rows_and_grad = _compiled_rows_and_grad if compiled else _focal_loss_rows_and_grad_from_labels
    rows, grad = rows_and_grad(logits, labels, *_constants(alpha, gamma, logits))
    # The M per-anchor losses are summed by torch's cascade sum: a compiled flat sum of all
    # M * K terms loses ~1e-5 of relative accuracy.
    return rows.sum(), grad


class _LossWithPrecomputedGrad(torch.autograd.Function):
    """A loss whose kernel returns (loss, d loss / d logits); only that gradient is kept."""

    @staticmethod
    def forward(ctx, logits: Tensor, kernel, *kernel_args):
        loss, grad = kernel(logits, *kernel_args)
        ctx.save_for_backward(grad)
        ctx.num_other_inputs = 1 + len(kernel_args)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        return (grad_output * grad,) + (None,) * ctx.num_other_inputs


def _dense_loss_and_grad(
    logits: Tensor, targets: Tensor, alpha_pos: Tensor, alpha_neg: Tensor, gamma: Tensor
):
    return _focal_loss_and_grad(logits, targets, 1.0, (alpha_pos, alpha_neg), gamma)


_compiled_dense_loss_and_grad = maybe_compile(
    _dense_loss_and_grad, "focal loss", dynamic_dims=((0, 0), (1, 0))
)


def _dense_kernel(logits: Tensor, targets: Tensor, alpha: float, gamma: float):
    return _compiled_dense_loss_and_grad(logits, targets, *_constants(alpha, gamma, logits))


def _check_gamma(gamma: float, function: str):
    if gamma < 0:
        raise ValueError(f"{function}: gamma={gamma} must be >= 0")


def float32_or_wider(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """
    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), with p = sigmoid(inputs) (Lin et al., eq. 5).

    Same contract as :func:`fvcore.nn.sigmoid_focal_loss`, with gradients that stay finite for
    every gamma >= 0 (see the module docstring). Gradients flow to `inputs` only (not to
    `targets`), and only once (no double backward).

    Args:
        inputs: (*) float logits, one per (anchor, class) pair.
        targets: (*) float targets in [0, 1], usually 0 (negative) or 1 (positive).
        alpha: the paper's alpha, weight of the positives in [0, 1]; negatives get 1 - alpha.
            A negative value disables alpha-balancing (alpha_t = 1).
        gamma: the paper's focusing parameter gamma >= 0; 0 gives alpha-balanced cross entropy.
        reduction: "none" returns the (*) elementwise loss, "mean" its mean, "sum" its sum.

    Returns:
        Tensor: the loss, float32 when the inputs are float16 or bfloat16 (the loss is always
        computed in at least float32, so it is safe under autocast).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"sigmoid_focal_loss: reduction={reduction!r}; expected one of {_REDUCTIONS}"
        )
    alpha = check_alpha(alpha, key="sigmoid_focal_loss: alpha")
    _check_gamma(gamma, "sigmoid_focal_loss")
    if inputs.shape != targets.shape:
        raise ValueError(
            f"sigmoid_focal_loss: inputs {tuple(inputs.shape)} and targets "
            f"{tuple(targets.shape)} must have the same shape"
        )
    inputs = float32_or_wider(inputs)
    with torch.autocast(inputs.device.type, enabled=False):
        loss = _LossWithPrecomputedGrad.apply(
            inputs,
            _dense_kernel,
            targets.to(inputs.dtype),
            alpha,
            float(gamma),
        )
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def sigmoid_focal_loss_from_labels(
    logits: Tensor,
    labels: Tensor,
    alpha: Union[float, Sequence[float]] = 0.25,
    gamma: float = 2.0,
    compiled: bool = True,
) -> Tensor:
    """
    The summed focal loss of (M, K) logits against (M,) integer labels, where label K is
    background (all-zero target) and -1 an ignored anchor (no loss, no gradient). `alpha` may
    also be K values, one per class: alpha_k weighs the positives of class k and 1 - alpha_k
    the negatives of class k.

    Equal to ``sigmoid_focal_loss(logits[valid], one_hot(labels[valid])[:, :K], reduction="sum")``
    but without the one-hot targets, the gather of the valid anchors (a host sync on GPUs) or
    an autograd graph: one fused pass (compiled where torch.compile works) computes the loss and
    its gradient. This is the training path of :class:`retina_plugin.SigmoidFocalLoss`.
    ``compiled=False`` runs that pass eagerly.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"sigmoid_focal_loss_from_labels: logits {tuple(logits.shape)} must be (M, K) and "
            f"labels {tuple(labels.shape)} (M,)"
        )
    alpha = check_alpha(alpha, logits.shape[1], key="sigmoid_focal_loss_from_labels: alpha")
    _check_gamma(gamma, "sigmoid_focal_loss_from_labels")
    logits = float32_or_wider(logits)
    with torch.autocast(logits.device.type, enabled=False):
        return _LossWithPrecomputedGrad.apply(
            logits, _labels_kernel, labels, alpha, float(gamma), compiled
        )
