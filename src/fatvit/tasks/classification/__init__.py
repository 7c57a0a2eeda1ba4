"""Classification: ImageNet-style folders or the digits set, timm's transforms, Mixup/CutMix, top-1/top-5.

``config`` (:class:`ClassifyConfig`, the paper's ImageNet recipe), ``data`` (folders, digits), ``task`` (the
engine's Task), ``metrics`` (top-1/top-5/loss evaluation), ``inference`` (a trained classifier read back from a
file), ``predict`` (top-k predictions for image files). The models are :mod:`fatvit.models` (any timm model).
"""
