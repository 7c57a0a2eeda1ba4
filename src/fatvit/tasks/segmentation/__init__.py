"""Semantic segmentation: Semantic FPN on FAT backbones, data in the ADE20K layout, mmseg's pipeline.

``config`` (:class:`SegmentConfig`, the paper's 80k recipe), ``data`` (ADE20K reader and pipeline), ``models``
(Semantic FPN), ``task`` (the engine's Task), ``metrics`` (mIoU), ``inference`` (a trained segmenter read back
from a file, evaluated), ``predict`` (class maps for image files, drawn).
"""
