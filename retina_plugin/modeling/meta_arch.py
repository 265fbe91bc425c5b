"""FocalRetinaNet: Detectron2's RetinaNet with a registered head and classification loss."""

from typing import NamedTuple, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from ..checks import check_at_least, check_in_range, check_iou_bands
from ..losses import build_classification_loss
from .autocast import AMP_DTYPES, autocast, keep_float32_where_bfloat16_conv_fails
from .detections import decode_detections
from .head import build_retina_head

__all__ = ["FocalRetinaNet", "AnchorAssignment", "build_anchor_matcher", "in_feature_shapes"]

_BOX_REG_LOSS_TYPES = ("smooth_l1", "giou", "diou", "ciou")


def _float32(predictions: list[list[Tensor]]) -> list[list[Tensor]]:
    return [[x.float() for x in per_level] for per_level in predictions]


def build_anchor_matcher(cfg) -> Matcher:
    """The matcher that labels anchors by IoU: ``MODEL.RETINANET.IOU_THRESHOLDS`` / ``IOU_LABELS``
    (checked; paper: [0, 0.4) background, [0.4, 0.5) ignored, >= 0.5 foreground), each box also
    given its best anchors (low-quality matches), as in Detectron2's RetinaNet."""
    retina = cfg.MODEL.RETINANET
    check_iou_bands(retina.IOU_THRESHOLDS, retina.IOU_LABELS, "MODEL.RETINANET")
    return Matcher(retina.IOU_THRESHOLDS, retina.IOU_LABELS, allow_low_quality_matches=True)


def in_feature_shapes(cfg, backbone: Backbone) -> list[ShapeSpec]:
    """The shapes of the backbone's outputs named by ``MODEL.RETINANET.IN_FEATURES`` (checked), in
    that order: what the head and the anchor generator are built from."""
    backbone_shape = backbone.output_shape()
    features = cfg.MODEL.RETINANET.IN_FEATURES
    missing = [f for f in features if f not in backbone_shape]
    if missing:
        raise ValueError(
            f"MODEL.RETINANET.IN_FEATURES names {missing}, which the backbone does not "
            f"output; it outputs {sorted(backbone_shape)}."
        )
    return [backbone_shape[f] for f in features]


class AnchorAssignment(NamedTuple):
    """
    What training computes before the losses, for a batch of N images with R anchors each
    (R = sum over levels of Hi * Wi * A) and C logits per anchor (``num_logits``).

    Attributes:
        anchors (list[Boxes]): per level, its Hi * Wi * A anchors (XYXY).
        pred_logits (list[Tensor]): per level, (N, Hi * Wi * A, C) float32 logits.
        pred_anchor_deltas (list[Tensor]): per level, (N, Hi * Wi * A, 4) box deltas.
        gt_labels (list[Tensor]): per image, (R,) labels: -1 ignored, K background, else class.
        gt_boxes (list[Tensor]): per image, (R, 4) matched ground-truth boxes.
    """

    anchors: list[Boxes]
    pred_logits: list[Tensor]
    pred_anchor_deltas: list[Tensor]
    gt_labels: list[Tensor]
    gt_boxes: list[Tensor]


@META_ARCH_REGISTRY.register()
class FocalRetinaNet(RetinaNet):
    """
    RetinaNet (Lin et al., 2017) whose head and classification loss come from retina_plugin's
    registries (``MODEL.FOCAL_RETINA.HEAD_NAME`` / ``LOSS_NAME``).

    With the defaults it computes what Detectron2's :class:`RetinaNet` computes (same parameters,
    losses, gradients and detections), so Detectron2 RetinaNet checkpoints load unchanged; on top
    of that it checks its config when built and the ground-truth class ids of every batch.
    """

    @configurable
    def __init__(
        self,
        *,
        classification_loss: nn.Module,
        normalizer_momentum: float = 0.9,
        sync_normalizer: bool = False,
        amp_dtype: Optional[str] = None,
        channels_last: bool = False,
        test_score_thresh_per_class: Optional[list[float]] = None,
        test_class_agnostic_nms: bool = False,
        **kwargs,
    ):
        """
        Args:
            classification_loss: a :class:`retina_plugin.losses.ClassificationLoss`, called as
                ``loss(pred_logits (N, R, C), gt_labels (N, R), anchors (R, 4))``; returns the
                summed loss. Its ``class_scores`` turns the head's logits into the scores of
                inference, and ``num_logits`` says how many logits per anchor it needs. See
                :data:`retina_plugin.losses.CLASSIFICATION_LOSS_REGISTRY`.
            normalizer_momentum: momentum of the moving average of the number of foreground
                anchors that divides the losses (0: this step's count).
            sync_normalizer: average that count over all workers before using it.
            amp_dtype: None for full precision, else the autocast dtype of the backbone and head
                ("bfloat16", "float16", or "auto": bfloat16 on the CPU, float16 on CUDA).
            channels_last: store conv weights channels-last (NHWC), which convolutions then also
                use for their outputs: faster on CPUs (oneDNN) and with tensor cores.
            test_score_thresh_per_class: K score thresholds of inference, one per class, in
                place of ``test_score_thresh``; None (or empty) keeps ``test_score_thresh``.
            test_class_agnostic_nms: one NMS over all classes at inference.
            kwargs: the arguments of Detectron2's :class:`RetinaNet`.
        """
        super().__init__(**kwargs)
        # alpha and gamma belong to the loss module; Detectron2's copies (read only by its own
        # losses(), which this class replaces) could disagree with it.
        del self.focal_loss_alpha, self.focal_loss_gamma
        self.classification_loss = classification_loss
        self.num_logits = classification_loss.num_logits(self.num_classes)  # C: K or K + 1
        self.normalizer_momentum = normalizer_momentum
        self.sync_normalizer = sync_normalizer
        self.amp_dtype = amp_dtype
        thresholds = None
        if test_score_thresh_per_class:
            thresholds = torch.tensor(test_score_thresh_per_class, dtype=torch.float32)
        # (K,) or None; a buffer, so that it follows the model's device (not in checkpoints).
        self.register_buffer("test_score_thresh_per_class", thresholds, persistent=False)
        self.test_class_agnostic_nms = test_class_agnostic_nms
        if amp_dtype is not None:
            keep_float32_where_bfloat16_conv_fails(self, enabled=self.training)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.amp_dtype is not None:  # float32 for the convolutions of autocast.py: training only
            keep_float32_where_bfloat16_conv_fails(self, enabled=mode)
        return self

    @classmethod
    def from_config(cls, cfg, class_priors: Optional[Tensor] = None):
        """`class_priors`: (K,) initial class probabilities pi_k for the head (default: every
        class MODEL.RETINANET.PRIOR_PROB); see :mod:`retina_plugin.modeling.priors`."""
        retina = cfg.MODEL.RETINANET
        _check_inference_config(cfg)
        if retina.BBOX_REG_LOSS_TYPE not in _BOX_REG_LOSS_TYPES:
            raise ValueError(
                f"MODEL.RETINANET.BBOX_REG_LOSS_TYPE = {retina.BBOX_REG_LOSS_TYPE!r} is not one "
                f"of {_BOX_REG_LOSS_TYPES}."
            )
        check_at_least("MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", retina.SMOOTH_L1_LOSS_BETA, 0)
        normalizer = cfg.MODEL.FOCAL_RETINA.LOSS_NORMALIZER
        amp_dtype = cfg.MODEL.FOCAL_RETINA.AMP_DTYPE
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(
                f"MODEL.FOCAL_RETINA.AMP_DTYPE = {amp_dtype!r} is not one of {tuple(AMP_DTYPES)}."
            )
        check_in_range(
            "MODEL.FOCAL_RETINA.LOSS_NORMALIZER.MOMENTUM", normalizer.MOMENTUM, 0, 1, high_open=True
        )

        backbone = build_backbone(cfg)
        feature_shapes = in_feature_shapes(cfg, backbone)
        return {
            "backbone": backbone,
            "head": build_retina_head(cfg, feature_shapes, class_priors=class_priors),
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": Box2BoxTransform(weights=retina.BBOX_REG_WEIGHTS),
            "anchor_matcher": build_anchor_matcher(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "num_classes": retina.NUM_CLASSES,
            "head_in_features": retina.IN_FEATURES,
            # Loss parameters:
            "classification_loss": build_classification_loss(cfg),
            "normalizer_momentum": normalizer.MOMENTUM,
            "sync_normalizer": normalizer.SYNC_ACROSS_WORKERS,
            "amp_dtype": amp_dtype if cfg.SOLVER.AMP.ENABLED else None,
            "channels_last": cfg.MODEL.FOCAL_RETINA.CHANNELS_LAST,
            "test_score_thresh_per_class": list(cfg.MODEL.FOCAL_RETINA.TEST.SCORE_THRESH_PER_CLASS),
            "test_class_agnostic_nms": cfg.MODEL.FOCAL_RETINA.TEST.CLASS_AGNOSTIC_NMS,
            "smooth_l1_beta": retina.SMOOTH_L1_LOSS_BETA,
            "box_reg_loss_type": retina.BBOX_REG_LOSS_TYPE,
            # Inference parameters:
            "test_score_thresh": retina.SCORE_THRESH_TEST,
            "test_topk_candidates": retina.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": retina.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            # Vis parameters
            "vis_period": cfg.VIS_PERIOD,
            "input_format": cfg.INPUT.FORMAT,
        }

    def forward(self, batched_inputs: list[dict[str, Tensor]]):
        if torch.jit.is_scripting():
            return self._scripted_inference(batched_inputs)
        if self.training:
            check_gt_classes(batched_inputs, self.num_classes)
        elif torch.compiler.is_exporting():
            return self._inference_while_exporting(batched_inputs)
        with autocast(
            self.amp_dtype, self.device.type
        ):  # backbone and head; the rest is float32 (below)
            return super().forward(batched_inputs)

    def forward_training(self, images, features, predictions, gt_instances):
        assigned = self._assign_anchors(features, predictions, gt_instances)
        return self.losses(
            assigned.anchors,
            assigned.pred_logits,
            assigned.gt_labels,
            assigned.pred_anchor_deltas,
            assigned.gt_boxes,
        )

    def _assign_anchors(self, features, predictions, gt_instances) -> AnchorAssignment:
        with torch.autocast(self.device.type, enabled=False):
            # As Detectron2's forward_training, with C = num_logits (not K) logits per anchor.
            pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
                _float32(predictions), [self.num_logits, 4]
            )
            anchors = self.anchor_generator(features)
            gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return AnchorAssignment(anchors, pred_logits, pred_anchor_deltas, gt_labels, gt_boxes)

    def assign_anchors(self, batched_inputs: list[dict]) -> AnchorAssignment:
        """
        The anchors, the head's per-anchor logits and deltas, and each anchor's assigned label
        and box for `batched_inputs` (with "instances"), exactly as training computes them before
        its losses; for tools (anchor coverage, the loss distribution). Runs in the model's
        current mode; wrap it in ``torch.no_grad()`` when no gradient is needed.
        """
        images = self.preprocess_image(batched_inputs)
        with autocast(self.amp_dtype, self.device.type):
            features = self.backbone(images.tensor)
            features = [features[f] for f in self.head_in_features]
            predictions = self.head(features)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        return self._assign_anchors(features, predictions, gt_instances)

    def forward_inference(
        self, images: ImageList, features: list[Tensor], predictions: list[list[Tensor]]
    ) -> list[Instances]:
        # Box decoding and NMS in float16 / bfloat16 lose AP: keep them float32.
        with torch.autocast(self.device.type, enabled=False):
            return self._detections(images.image_sizes, features, _float32(predictions))

    def _detections(
        self,
        image_sizes: list[tuple[int, int]],
        features: list[Tensor],
        predictions: list[list[Tensor]],
    ) -> list[Instances]:
        """Each image's detections from the head's float32 predictions (eager and TorchScript)."""
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_logits, 4]
        )
        anchors = self.anchor_generator(features)
        results: list[Instances] = []
        for i, image_size in enumerate(image_sizes):
            # The loss's own scores: (Hi * Wi * A, K) probabilities per level.
            scores = [self.classification_loss.class_scores(x[i]) for x in pred_logits]
            deltas = [x[i] for x in pred_anchor_deltas]
            results.append(self.inference_single_image(anchors, scores, deltas, image_size))
        return results

    def detect(self, image: Tensor, output_size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """
        The whole inference of one image as tensors (what :mod:`retina_plugin.export` exports):
        `image` (3, h, w) float32 in INPUT.FORMAT, already resized; `output_size` (2,) int64, the
        (height, width) to map boxes to. Returns boxes (D, 4) XYXY in output_size's pixels,
        scores (D,) and classes (D,) int64, best first: what ``forward`` returns for one image
        with "height" and "width" (float32, without autocast).
        """
        height, width = image.shape[-2], image.shape[-1]
        x = (image - self.pixel_mean) / self.pixel_std
        # Pad bottom and right with zeros (the mean colour) to a multiple of the divisibility.
        d = int(self.backbone.size_divisibility)
        if d > 1:
            x = F.pad(x, (0, (d - width % d) % d, 0, (d - height % d) % d))
        features = self.backbone(x[None])
        features = [features[f] for f in self.head_in_features]
        logits, deltas = self.head(features)
        anchors = [a.tensor for a in self.anchor_generator(features)]
        # (1, A * C, Hi, Wi) -> (Hi * Wi * A, C), as forward_inference.
        logits, deltas = self._transpose_dense_predictions([logits, deltas], [self.num_logits, 4])
        boxes, scores, classes = self._decode(
            anchors,
            [self.classification_loss.class_scores(x[0]) for x in logits],
            [x[0] for x in deltas],
        )
        # As Detectron2's detector_postprocess: scale to the output size, clip, drop empty boxes.
        out_size = output_size.to(boxes.dtype)
        scale = torch.stack([out_size[1] / width, out_size[0] / height]).repeat(2)
        boxes = torch.minimum((boxes * scale).clamp(min=0), out_size.flip(0).repeat(2))
        keep = torch.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).squeeze(1)
        return (
            boxes.index_select(0, keep),
            scores.index_select(0, keep),
            classes.index_select(0, keep),
        )

    def _scripted_inference(self, batched_inputs: list[dict[str, Tensor]]) -> list[Instances]:
        """forward in TorchScript (Detectron2's ``scripting_with_instances``): inference in
        float32 (no autocast), each image's Instances at the network input's size, as Detectron2's
        scripted RetinaNet returns them (``detector_postprocess`` is the caller's)."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        logits, deltas = self.head(features)
        return self._detections(images.image_sizes, features, [logits, deltas])

    def _inference_while_exporting(self, batched_inputs: list[dict]) -> list[dict]:
        """forward's results, one image at a time through :meth:`detect`, as torch.export can
        capture them: Detectron2's own post-processing branches on the number of detections
        (``Boxes``: ``if tensor.numel() == 0``; ``Instances.set``: ``len()``), which torch.export
        cannot decide for a number that depends on the data."""
        results = []
        for inputs in batched_inputs:
            image = inputs["image"].to(self.device)
            height, width = (
                inputs.get("height", image.shape[-2]),
                inputs.get("width", image.shape[-1]),
            )
            size = torch.stack([torch.scalar_tensor(x, dtype=torch.int64) for x in (height, width)])
            boxes, scores, classes = self.detect(image.float(), size)
            instances = _ExportedInstances(size)
            instances.set("pred_boxes", _ExportedBoxes(boxes))
            instances.set("scores", scores)
            instances.set("pred_classes", classes)
            results.append({"instances": instances})
        return results

    def inference_single_image(
        self,
        anchors: list[Boxes],
        box_cls: list[Tensor],
        box_delta: list[Tensor],
        image_size: tuple[int, int],
    ) -> Instances:
        """One image's detections from per-level (Hi * Wi * A, K) scores and (Hi * Wi * A, 4)
        deltas, as Detectron2's RetinaNet computes them, through the exportable
        :func:`retina_plugin.modeling.detections.decode_detections`."""
        boxes, scores, classes = self._decode([x.tensor for x in anchors], box_cls, box_delta)
        result = Instances(image_size)
        result.pred_boxes = Boxes(boxes)
        result.scores = scores
        result.pred_classes = classes
        return result

    def _decode(self, anchors: list[Tensor], scores: list[Tensor], deltas: list[Tensor]):
        """decode_detections with this model's inference settings (MODEL.RETINANET.*_TEST,
        TEST.DETECTIONS_PER_IMAGE)."""
        return decode_detections(
            anchors,
            scores,
            deltas,
            self.box2box_transform,
            num_classes=self.num_classes,
            score_thresh=self.test_score_thresh,
            topk_candidates=self.test_topk_candidates,
            nms_thresh=self.test_nms_thresh,
            max_detections=self.max_detections_per_image,
            class_thresh=self.test_score_thresh_per_class,
            class_agnostic=self.test_class_agnostic_nms,
        )

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """
        Args:
            anchors (list[Boxes]): one Boxes of (Hi * Wi * A) anchors per level.
            pred_logits, pred_anchor_deltas (list[Tensor]): per level, (N, Hi * Wi * A, C) and
                (N, Hi * Wi * A, 4), C = num_logits.
            gt_labels, gt_boxes (list[Tensor]): per image, (R,) labels in {-1, 0, ..., K} (-1:
                ignored, K: background) and (R, 4) matched boxes, R = sum(Hi * Wi * A).

        Returns:
            dict[str, Tensor]: "loss_cls" and "loss_box_reg", each summed over anchors and
            divided by the (moving average of the) number of foreground anchors.
        """
        num_images = len(gt_labels)
        gt_labels = torch.stack(gt_labels)  # (N, R)
        valid_mask = gt_labels >= 0
        pos_mask = valid_mask & (gt_labels != self.num_classes)
        num_pos_anchors = self._count_foreground(pos_mask)
        get_event_storage().put_scalar("num_pos_anchors", num_pos_anchors / num_images)
        normalizer = self._ema_update(
            "loss_normalizer", max(num_pos_anchors, 1), 100, momentum=self.normalizer_momentum
        )

        # All N * R anchors; ignored ones (label -1) get no loss from the classification loss.
        loss_cls = self.classification_loss(
            cat(pred_logits, dim=1), gt_labels, Boxes.cat(anchors).tensor
        )
        loss_box_reg = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

    def _count_foreground(self, pos_mask: Tensor) -> float:
        """This worker's number of foreground anchors, or the mean over workers if synced."""
        count = pos_mask.sum()
        world_size = comm.get_world_size()
        if self.sync_normalizer and world_size > 1:
            count = count.float()
            dist.all_reduce(count)
            count = count / world_size
        return count.item()


class _ExportedBoxes(Boxes):
    """Boxes of an (N, 4) float32 tensor, made without Detectron2's ``numel() == 0`` branch."""

    def __init__(self, tensor: Tensor):
        self.tensor = tensor


class _ExportedInstances(Instances):
    """Instances whose fields are set without ``len()`` (their lengths agree by construction)."""

    def set(self, name: str, value) -> None:
        self._fields[name] = value


def _check_inference_config(cfg):
    retina = cfg.MODEL.RETINANET
    check_in_range("MODEL.RETINANET.SCORE_THRESH_TEST", retina.SCORE_THRESH_TEST, 0, 1)
    per_class = list(cfg.MODEL.FOCAL_RETINA.TEST.SCORE_THRESH_PER_CLASS)
    if per_class and (
        len(per_class) != retina.NUM_CLASSES or not all(0 <= t <= 1 for t in per_class)
    ):
        raise ValueError(
            f"MODEL.FOCAL_RETINA.TEST.SCORE_THRESH_PER_CLASS = {per_class} must hold one score "
            f"threshold in [0, 1] per class, i.e. MODEL.RETINANET.NUM_CLASSES = "
            f"{retina.NUM_CLASSES} values (or be empty to use MODEL.RETINANET.SCORE_THRESH_TEST "
            "for every class)."
        )
    check_in_range("MODEL.RETINANET.NMS_THRESH_TEST", retina.NMS_THRESH_TEST, 0, 1)
    check_at_least("MODEL.RETINANET.TOPK_CANDIDATES_TEST", retina.TOPK_CANDIDATES_TEST, 1)
    check_at_least("TEST.DETECTIONS_PER_IMAGE", cfg.TEST.DETECTIONS_PER_IMAGE, 1)


def check_gt_classes(batched_inputs: list[dict], num_classes: int):
    """
    Raise if an image's ground-truth class id lies outside [0, num_classes).

    Detectron2's RetinaNet silently takes id K as background and fails obscurely on larger ids.
    The check runs on the inputs as the data loader gives them (on the CPU), so costs no sync.
    """
    for inputs in batched_inputs:
        if "instances" not in inputs:
            raise ValueError(
                f"Image {_describe(inputs)} has no 'instances' in training; the data loader must "
                "give ground truth (Detectron2's DatasetMapper with is_train=True does)."
            )
        classes = inputs["instances"].gt_classes
        bad = classes[(classes < 0) | (classes >= num_classes)]
        if bad.numel():
            raise ValueError(
                f"Image {_describe(inputs)} has ground-truth class id(s) {sorted(set(bad.tolist()))} "
                f"outside [0, MODEL.RETINANET.NUM_CLASSES = {num_classes}). Set NUM_CLASSES to the "
                "dataset's number of categories, or map its category ids to 0 .. NUM_CLASSES - 1."
            )


def _describe(inputs: dict) -> str:
    for key in ("image_id", "file_name"):
        if key in inputs:
            return f"{key}={inputs[key]!r}"
    return "(no image_id or file_name)"
