"""COCO box and mask AP as the field computes them: pycocotools' COCOeval against the instances file.

:class:`CocoEvaluator` collects a detector's outputs as COCO results
(boxes as x, y, width, height; masks as RLE of the mask binarised at >= 0.5, mmdet's mask_thr_binary;
labels mapped back to the file's category ids), then runs COCOeval per IoU
type against the ground-truth file itself, so crowd regions and the
annotated areas count as they do for everyone. Under DDP the results of all
processes are gathered first.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from ...distributed import all_gather_list

__all__ = ["CocoEvaluator", "COCO_STAT_NAMES", "detections_to_coco"]

#: The names of COCOeval's first six statistics (maximum 100 detections).
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def detections_to_coco(
    image_id: int, output: Dict[str, torch.Tensor], cat_ids: Sequence[int], label_offset: int
) -> List[Dict[str, Any]]:
    """One image's detections (torchvision's output dict) as COCO result records."""
    boxes = output["boxes"].detach().float().cpu()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = (output["labels"].detach().cpu() - label_offset).tolist()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    records = []
    masks = output.get("masks")
    binary = (masks[:, 0] >= 0.5).cpu().numpy().astype(np.uint8) if masks is not None else None
    for k, (box, score, label) in enumerate(zip(xywh, scores, labels)):
        record: Dict[str, Any] = dict(image_id=int(image_id), category_id=int(cat_ids[label]),
                                      bbox=[round(v, 3) for v in box], score=float(score))  # fmt: skip
        if binary is not None:
            rle = mask_utils.encode(np.asfortranarray(binary[k]))
            record["segmentation"] = dict(size=rle["size"], counts=rle["counts"].decode("ascii"))
        records.append(record)
    return records


class CocoEvaluator:
    """Accumulates detections of a COCO data set and computes its AP table.

    Args:
        coco_gt: the pycocotools ``COCO`` of the ground truth (the instances file).
        cat_ids: the category id of each class index.
        label_offset: the detector's label of class index 0 (Mask R-CNN: 1).
        iou_types: ``("bbox",)`` or ``("bbox", "segm")``.
    """

    def __init__(self, coco_gt: Any, cat_ids: Sequence[int], label_offset: int, iou_types: Sequence[str]) -> None:
        self.coco_gt = coco_gt
        self.cat_ids = list(cat_ids)
        self.label_offset = label_offset
        self.iou_types = tuple(iou_types)
        self.results: List[Dict[str, Any]] = []
        self.image_ids: List[int] = []
        self.text = ""

    def update(self, image_ids: Sequence[int], outputs: Sequence[Dict[str, torch.Tensor]]) -> None:
        for image_id, output in zip(image_ids, outputs):
            self.image_ids.append(int(image_id))
            self.results.extend(detections_to_coco(image_id, output, self.cat_ids, self.label_offset))

    def compute(self) -> Dict[str, float]:
        """``{iou_type}_{AP, AP50, AP75, APs, APm, APl}`` as fractions in [0, 1], over the images seen by all
        processes; NaN for an area range without ground truth. COCOeval's printed tables are kept in ``text``.
        A set without any detection scores 0."""
        results = all_gather_list(self.results)
        image_ids = sorted(set(all_gather_list(self.image_ids)))
        metrics: Dict[str, float] = {}
        texts = []
        for iou_type in self.iou_types:
            if not results:
                metrics.update({f"{iou_type}_{name}": 0.0 for name in COCO_STAT_NAMES})
                texts.append(f"{iou_type}: no detections")
                continue
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                dt = self.coco_gt.loadRes([dict(r) for r in results])  # loadRes adds keys to the records
                ev = COCOeval(self.coco_gt, dt, iou_type)
                ev.params.imgIds = image_ids
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            table = [line for line in out.getvalue().splitlines() if line.lstrip().startswith("Average")]
            texts.append(f"{iou_type}:\n" + "\n".join(table))
            for name, value in zip(COCO_STAT_NAMES, ev.stats[:6]):
                # COCOeval gives -1 where no ground truth falls in an area range: undefined, not 0
                metrics[f"{iou_type}_{name}"] = float(value) if value >= 0 else float("nan")
        self.text = "\n".join(texts)
        return metrics
