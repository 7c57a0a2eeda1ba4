"""Detection as a task of the training engine: COCO data, torchvision's detectors, COCO AP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...checkpoint import fat_interaction, load_finetune
from ...data import Splits
from ...errors import FatvitError, unknown_choice
from ..base import Metric, Runner, Task, evaluate_batches, split_of
from ..scenes import embedded_scenes
from .data import CocoDetection, collate_detection, detection_transform
from .metrics import COCO_STAT_NAMES, CocoEvaluator
from .models import DETECTORS, build_detector

__all__ = ["DetectionTask", "coco_split", "CLASS_LAYERS", "evaluate_detector", "same_size_groups"]

_log = logging.getLogger("fatvit.train")

#: The layers of each detector head whose shape depends on the classes (replaced when fine-tuning).
CLASS_LAYERS = {
    "retinanet": ("head.classification_head.cls_logits.",),
    "mask_rcnn": ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
}


def coco_split(root: str | Path, split: str) -> Tuple[Path, Path]:
    """The images folder and instances JSON of ``split`` (train or val) in a COCO root.

    ``ROOT/{split}2017/`` with ``ROOT/annotations/instances_{split}2017.json``
    (COCO 2017), or ``ROOT/{split}/`` with ``ROOT/annotations/instances_{split}.json``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FatvitError(f"data folder not found: {root}")
    for name in (f"{split}2017", split):
        images, annotations = root / name, root / "annotations" / f"instances_{name}.json"
        if images.is_dir() and annotations.is_file():
            return images, annotations
    raise FatvitError(
        f"{root} holds no COCO {split} split: expected {root}/{split}2017/ with "
        f"{root}/annotations/instances_{split}2017.json (or {split}/ with instances_{split}.json)"
    )


def data_root(data: Optional[str]) -> Path:
    """The COCO root of a config's ``data``: the folder itself, or the embedded scenes' ``coco/``."""
    return Path(data) if data is not None else embedded_scenes() / "coco"


def to_device(images: List[torch.Tensor], targets: List[Dict[str, Any]], device: torch.device, offset: int) -> Any:
    images = [img.to(device, non_blocking=True) for img in images]
    moved = []
    for t in targets:
        t = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
        t["labels"] = t["labels"] + offset
        moved.append(t)
    return images, moved


def same_size_groups(images: Sequence[torch.Tensor]) -> List[List[int]]:
    """The indices of ``images`` grouped by height and width, in the order each size first appears.

    A detector resizes and pads the images of one forward to a common size; images of one input size need no
    padding beyond their own, so each of them gets what it gets alone."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[-2:]), []).append(i)
    return list(groups.values())


@torch.no_grad()
def evaluate_detector(
    model: nn.Module,
    loader: Any,
    coco_gt: Any,
    cat_ids: Sequence[int],
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    padded_batches: bool = False,
) -> Tuple[Dict[str, Any], str]:
    """COCO AP of ``model`` over ``loader`` (all processes together), and COCOeval's tables as text.

    Each forward takes the images of a batch that share one size (:func:`same_size_groups`), so that an image's
    detections do not depend on the images read with it: FAT's ``GroupNorm(1, C)`` normalises over every pixel of
    the padded batch and FASA's global attention attends to padded tokens, so padding an image to a larger
    partner's size changes its detections. ``padded_batches`` runs each batch as one forward instead, padded to
    its largest image (torchvision's way; faster with mixed sizes, but an image's result depends on its partners).

    ``amp_dtype`` runs the model under autocast, which fatvit's detectors keep to their backbone and neck: the
    heads, box decoding and NMS run in float32 (:class:`fatvit.tasks.detection.models.FP32Heads`)."""
    masks = hasattr(model, "roi_heads") and model.roi_heads.has_mask()
    evaluator = CocoEvaluator(coco_gt, cat_ids, model.label_offset, ("bbox", "segm") if masks else ("bbox",))

    def step(images: List[torch.Tensor], targets: List[Dict[str, Any]], run: Runner) -> int:
        outputs: List[Any] = [None] * len(images)
        for group in [list(range(len(images)))] if padded_batches else same_size_groups(images):
            for i, output in zip(group, run(model, [images[i] for i in group])):
                outputs[i] = output
        evaluator.update([t["image_id"] for t in targets], outputs)
        return len(images)

    metrics = evaluate_batches(model, loader, step, evaluator.compute, device, amp_dtype)
    return metrics, evaluator.text


class DetectionTask(Task):
    name = "detect"
    primary_metric = "bbox_AP"
    metric_title = "val box AP"
    joint_transform = True
    embedded_name = "the embedded digit scenes (COCO format)"
    find_unused_parameters = True  # Mask R-CNN's mask head gets no gradient from a batch without objects

    nested_summary = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        if cfg.model not in DETECTORS:
            raise unknown_choice("detector", cfg.model, DETECTORS)
        self.head = DETECTORS[cfg.model].head
        self.masks = self.head == "mask_rcnn"
        # the detector's label of class 0: Mask R-CNN's 0 is its background
        self.label_offset = 1 if self.masks else 0

    def build_splits(self) -> Splits:
        root = data_root(self.cfg.data)
        cfg = self.cfg
        train = CocoDetection(*coco_split(root, "train"), train=True, masks=self.masks,
                              filter_empty_gt=cfg.filter_empty_gt, min_image_side=cfg.min_image_side)  # fmt: skip
        val = CocoDetection(*coco_split(root, "val"), train=False)  # COCOeval reads the masks from the file
        if train.cat_ids != val.cat_ids:
            raise FatvitError(
                f"the train and val annotation files list other categories ({len(train.cat_ids)} and "
                f"{len(val.cat_ids)}; ids {train.cat_ids[:5]}... and {val.cat_ids[:5]}...)"
            )
        if train.images_left_out:
            _log.info(
                "%d training image(s) left out: without annotations, or under %d px on the shorter side "
                "(filter_empty_gt)", train.images_left_out, cfg.min_image_side,
            )  # fmt: skip
        if train.crowd_left_out:
            _log.info("%d crowd annotation(s) left out of the training targets", train.crowd_left_out)
        return Splits(train, val, train.classes)

    def build_model(self, classes: Sequence[str], model_kwargs: Dict[str, Any], load_weights: bool = True) -> nn.Module:
        cfg = self.cfg
        model = build_detector(
            cfg.model, num_classes=len(classes), min_size=cfg.min_size, max_size=cfg.max_size,
            backbone_weights=cfg.backbone_file if load_weights else None,
            detections_per_img=cfg.detections_per_img, score_thresh=cfg.score_thresh, box_loss=cfg.box_loss,
            rpn_post_nms_train=cfg.rpn_post_nms_train, aligned_roi=cfg.aligned_roi, p7_relu=cfg.p7_relu,
            mmdet_targets=cfg.mmdet_targets, fpn_init=cfg.fpn_init, **model_kwargs,
        )  # fmt: skip
        if cfg.finetune and load_weights:
            load_finetune(model, cfg.finetune, cfg.model, CLASS_LAYERS[self.head])
        return model

    def mean_std(self, model: nn.Module) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        return tuple(model.transform.image_mean), tuple(model.transform.image_std)

    def transforms(self, mean: Sequence[float], std: Sequence[float]) -> Tuple[Callable, Callable]:
        # the detector normalises and resizes itself (GeneralizedRCNNTransform)
        return detection_transform(True, self.cfg.hflip), detection_transform(False)

    def collate(self, batch: Sequence[Any]) -> Tuple[Any, Any, int]:
        return collate_detection(batch)

    def start_notes(self, starting: bool) -> List[str]:
        return [self.cfg.weights_origin(starting)]

    def batch_groups(self, train_set: Any) -> Optional[List[int]]:
        return train_set.aspect_groups() if self.cfg.group_by_aspect_ratio else None

    def prepare_batch(self, inputs: Any, targets: Any, device: torch.device, channels_last: bool) -> Tuple[Any, Any]:
        return to_device(inputs, targets, device, self.label_offset)

    def loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        losses = model(inputs, targets)
        return sum(losses.values())

    def evaluate(
        self, model: nn.Module, loader: Any, device: torch.device, amp_dtype: Optional[torch.dtype], channels_last: bool
    ) -> Dict[str, Any]:
        val = split_of(loader)
        return evaluate_detector(model, loader, val.coco, val.cat_ids, device, amp_dtype, self.cfg.pad_eval_batches)[0]

    def metrics(self) -> Sequence[Metric]:
        """COCO's box AP figures (and mask AP for Mask R-CNN); the log line shows AP and AP50 of each."""
        titles = {"bbox_AP": "box AP", "bbox_AP50": "AP50", "segm_AP": "mask AP", "segm_AP50": "AP50"}
        kinds = ("bbox", "segm") if self.masks else ("bbox",)
        return [Metric(f"{k}_{n}", titles.get(f"{k}_{n}", "")) for k in kinds for n in COCO_STAT_NAMES]

    def meta(self, model_kwargs: Dict[str, Any], splits: Splits, mean: Sequence[float],
             std: Sequence[float], model: nn.Module) -> Dict[str, Any]:  # fmt: skip
        cfg, classes = self.cfg, splits.classes
        record = dict(
            task="detect", model=cfg.model, model_kwargs=dict(model_kwargs), num_classes=len(classes),
            classes=list(classes), category_ids=[int(c) for c in splits.train.cat_ids], min_size=cfg.min_size,
            max_size=cfg.max_size, detections_per_img=cfg.detections_per_img, score_thresh=cfg.score_thresh,
            mean=[float(m) for m in mean], std=[float(s) for s in std], aligned_roi=cfg.aligned_roi,
            p7_relu=cfg.p7_relu,
        )  # fmt: skip
        if fat_interaction(model):
            record["interaction"] = fat_interaction(model)
        return record
