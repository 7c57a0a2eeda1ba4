"""Detection: RetinaNet and Mask R-CNN (torchvision's, set up as mmdet's 1x) on FAT backbones, COCO data.

``config`` (:class:`DetectConfig`, the 1x recipe), ``data`` (COCO reader and transforms), ``models`` (the
detectors), ``rcnn`` (Mask R-CNN's mmdet-style heads), ``task`` (the engine's Task), ``metrics`` (COCO AP),
``inference`` (a trained detector read back from a file, evaluated), ``predict`` (detections for image files,
drawn), ``export`` (ONNX).
"""
