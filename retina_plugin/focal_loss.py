"""The sigmoid focal loss of Lin et al. (2017), computed so that it stays finite everywhere.

Shape shorthand: ``*`` is any shape; inputs and targets share it.

fvcore's and torchvision's implementations compute ``(1 - p_t) ** gamma`` by autograd. For
gamma in (0, 1) (the paper's Table 1b rows 0.1, 0.2, 0.5) the derivative of that power,
``gamma * (1 - p_t) ** (gamma - 1)``, is infinite once ``1 - p_t`` rounds to 0 (|x| >= 17 in
float32), and ``inf * 0`` poisons the gradient with NaN. Here the gradient is written out in the
closed form of the paper's appendix B, in which that singular factor cancels, so values and
gradients are finite for every gamma >= 0 and every finite logit.
"""

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["sigmoid_focal_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def _alpha_t(targets: Tensor, alpha: float):
    # alpha_t = alpha for y = 1 and 1 - alpha for y = 0; soft targets interpolate, as in fvcore.
    if alpha < 0:
        return 1.0
    return alpha * targets + (1 - alpha) * (1 - targets)


def _focal_terms(inputs: Tensor, targets: Tensor):
    """Returns (ce, 1 - p_t, p, 1 - p) from logits, each exact (no `1 - p` cancellation)."""
    p = torch.sigmoid(inputs)
    p_neg = torch.sigmoid(-inputs)  # 1 - p, exact where p rounds to 1
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    one_minus_p_t = targets * p_neg + (1 - targets) * p
    return ce, one_minus_p_t, p, p_neg


class _SigmoidFocalLoss(torch.autograd.Function):
    """Elementwise alpha_t * (1 - p_t)^gamma * CE(p_t); keeps only its inputs for backward."""

    @staticmethod
    def forward(ctx, inputs: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
        ctx.save_for_backward(inputs, targets)
        ctx.alpha, ctx.gamma = alpha, gamma
        ce, one_minus_p_t, _, _ = _focal_terms(inputs, targets)
        return _alpha_t(targets, alpha) * one_minus_p_t.pow(gamma) * ce

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        inputs, targets = ctx.saved_tensors
        gamma = ctx.gamma
        ce, one_minus_p_t, p, p_neg = _focal_terms(inputs, targets)
        # d/dx [(1-p_t)^g * ce] = (1-p_t)^g * [(p - y) + g * (1 - 2y) * p(1-p)/(1-p_t) * ce].
        # p(1-p)/(1-p_t) lies in [0, 1] (it is p for y = 1 and 1 - p for y = 0); where 1 - p_t
        # underflows to 0 its limit is 1, and (1-p_t)^g = 0 there anyway for g > 0.
        ratio = torch.where(one_minus_p_t > 0, p * p_neg / one_minus_p_t, 1.0)
        grad = one_minus_p_t.pow(gamma) * ((p - targets) + gamma * (1 - 2 * targets) * ratio * ce)
        grad = grad * _alpha_t(targets, ctx.alpha)
        return grad_output * grad, None, None, None


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
    every gamma >= 0 (see the module docstring).

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
    if gamma < 0:
        raise ValueError(f"sigmoid_focal_loss: gamma={gamma} must be >= 0")
    if alpha > 1:
        raise ValueError(f"sigmoid_focal_loss: alpha={alpha} must be in [0, 1] (or < 0 to disable)")
    if inputs.shape != targets.shape:
        raise ValueError(
            f"sigmoid_focal_loss: inputs {tuple(inputs.shape)} and targets "
            f"{tuple(targets.shape)} must have the same shape"
        )
    dtype = torch.promote_types(inputs.dtype, torch.float32)
    with torch.autocast(inputs.device.type, enabled=False):
        loss = _SigmoidFocalLoss.apply(
            inputs.to(dtype), targets.to(dtype), float(alpha), float(gamma)
        )
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
