"""What FASA's two branches do on an image, and where the predicted class comes from.

For one block of each stage (the last, by default), forward hooks on the
unchanged model record FASA's query ``Q``, its key/value projection of the
downsampled map and the local branch's depthwise conv ``Q'``; from them
:func:`fasa_maps` computes

* the branches ``X'_local = Q' * sigmoid(Q')`` and
  ``X'_global = MHSA(Q, pool(K), pool(V))`` (the same ops as the model);
* their gates ``sigmoid(X'_local)`` and ``sigmoid(X'_global)``, averaged over
  channels: in the bidirectional interaction each branch is multiplied by
  the other's gate, so a gate map shows where a branch lets the other
  through (the authors' ``"reference"`` interaction applies only the global
  gate; the fusion ablations apply neither, and the maps say so);
* the global branch's attention from one query point over the downsampled
  key/value map, averaged over heads.

:func:`class_activation_map` is Grad-CAM (the ``grad-cam`` package) on the
last stage. :func:`explain` gathers both for an image, :func:`plot_explanation`
draws them. Every map is also given at the input image's size: gates as
values in (0, 1), attention spread over the pixels each key/value cell
covers so that it still sums to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .data import load_rgb
from .errors import FatvitError
from .layers.fasa import FASA, from_heads, to_heads

__all__ = [
    "Explanation",
    "StageMaps",
    "class_activation_map",
    "explain",
    "explain_image",
    "fasa_maps",
    "gates_applied",
    "map_point",
    "plot_explanation",
]


def gates_applied(interaction: str) -> Tuple[bool, bool]:
    """Whether the model multiplies by (the local gate, the global gate) in this interaction."""
    return {"bidirectional": (True, True), "reference": (False, True)}.get(interaction, (False, False))


@dataclass
class StageMaps:
    """FASA's maps in one block; ``(H, W)`` maps are at the input image's size."""

    stage: int
    block: int
    #: input pixels per cell of the stage's map, and per cell of the downsampled key/value map
    stride: int
    kv_stride: int
    interaction: str
    #: the branches, ``(C, h, w)`` at the stage's resolution
    x_local: torch.Tensor
    x_global: torch.Tensor
    #: mean over channels of sigmoid(X'_local) and sigmoid(X'_global), (H, W), in (0, 1)
    local_gate: torch.Tensor
    global_gate: torch.Tensor
    #: the query point's attention over the key/value map (h_kv, w_kv), summing to 1, mean over heads
    attention_kv: torch.Tensor
    #: the same spread over the input pixels each key/value cell covers, (H, W), summing to 1
    attention: torch.Tensor
    #: the query cell (row, column) in the stage's map
    query: Tuple[int, int]

    @property
    def local_gate_applied(self) -> bool:
        return gates_applied(self.interaction)[0]

    @property
    def global_gate_applied(self) -> bool:
        return gates_applied(self.interaction)[1]


@dataclass
class Explanation:
    """Everything :func:`explain` finds for one image."""

    #: the model's input, de-normalised to [0, 1], (3, H, W)
    image: torch.Tensor
    #: class probabilities, and the class the CAM explains (the predicted one unless asked otherwise)
    probs: torch.Tensor
    target: int
    #: the query point (x, y) in input pixels
    point: Tuple[int, int]
    #: Grad-CAM of ``target`` on the last stage, (H, W), in [0, 1]
    cam: torch.Tensor
    stages: List[StageMaps]
    classes: Optional[List[str]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def target_name(self) -> str:
        return self.classes[self.target] if self.classes else str(self.target)


def _fasa_blocks(model: nn.Module, block: int) -> List[Tuple[int, int, FASA, int]]:
    """(stage, block index, FASA, stride) for the chosen block of every stage."""
    layers = getattr(model, "layers", None)
    info = getattr(model, "feature_info", None)
    if layers is None or not isinstance(info, list):
        raise FatvitError(f"{type(model).__name__} is not a FAT model: explain needs FASA blocks")
    chosen = []
    for i, stage in enumerate(layers):
        blocks = stage.blocks
        if not -len(blocks) <= block < len(blocks):
            raise FatvitError(f"stage {i} has {len(blocks)} block(s); block {block} does not exist")
        index = block % len(blocks)
        attn = blocks[index].attn
        if not isinstance(attn, FASA):
            raise FatvitError(
                f"stage {i} mixes tokens with {type(attn).__name__}, not FASA: its gates and attention cannot be shown "
                "(the CAM alone: class_activation_map)"
            )
        chosen.append((i, index, attn, int(info[i]["reduction"])))
    return chosen


def _to_image(cell_map: torch.Tensor, stride: int, size: Tuple[int, int]) -> torch.Tensor:
    """A ``(h, w)`` map whose cells are ``stride`` pixels, bilinearly upsampled and cropped to ``size``."""
    h, w = cell_map.shape
    up = F.interpolate(cell_map[None, None], size=(h * stride, w * stride), mode="bilinear", align_corners=False)
    return up[0, 0, : size[0], : size[1]]


def _expand(cells: torch.Tensor, stride: int, size: Tuple[int, int]) -> torch.Tensor:
    """Each cell's value on every input pixel it covers (``stride`` square), cropped to ``size``."""
    return cells.repeat_interleave(stride, 0).repeat_interleave(stride, 1)[: size[0], : size[1]]


def _spread(cells: torch.Tensor, stride: int, size: Tuple[int, int]) -> torch.Tensor:
    """Each cell's value shared evenly by the input pixels it covers (``stride`` square, cut at the border)."""
    height, width = size
    rows = (torch.arange(cells.shape[0]) * stride).clamp(max=height)
    cols = (torch.arange(cells.shape[1]) * stride).clamp(max=width)
    row_px = (rows + stride).clamp(max=height) - rows
    col_px = (cols + stride).clamp(max=width) - cols
    return _expand(cells / (row_px[:, None] * col_px[None, :]).clamp(min=1).to(cells.dtype), stride, size)


def _centre(x: torch.Tensor) -> Tuple[int, int]:
    return x.shape[-1] // 2, x.shape[-2] // 2


@torch.no_grad()
def fasa_maps(
    model: nn.Module, x: torch.Tensor, point: Optional[Tuple[int, int]] = None, block: int = -1
) -> Tuple[torch.Tensor, List[StageMaps]]:
    """Run ``model`` on one image ``x`` (1, 3, H, W) and return its logits and each stage's FASA maps.

    Args:
        point: the query (x, y) in input pixels (default: the centre).
        block: which block of each stage (default: the last).

    Raises:
        FatvitError: not a FAT model with FASA, a batch of more than one image, or a point outside the image.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise FatvitError(f"explain takes one image (1, 3, H, W), got a tensor of shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    px, py = point if point is not None else _centre(x)
    if not (0 <= px < width and 0 <= py < height):
        raise FatvitError(f"point ({px}, {py}) lies outside the {width}x{height} input")
    chosen = _fasa_blocks(model, block)
    seen: Dict[Tuple[int, str], torch.Tensor] = {}
    hooks = []
    for stage, _, attn, _ in chosen:
        for name in ("q", "kv", "local_mixer"):

            def keep(module: nn.Module, args: Any, output: torch.Tensor, key: Tuple[int, str] = (stage, name)) -> None:
                seen[key] = output.detach().float().contiguous()

            hooks.append(getattr(attn, name).register_forward_hook(keep))
    try:
        logits = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    maps = []
    for stage, index, attn, stride in chosen:
        q, (k, v) = seen[(stage, "q")], seen[(stage, "kv")].chunk(2, dim=1)
        heads = attn.num_heads
        qh, kh, vh = to_heads(q, heads), to_heads(k, heads), to_heads(v, heads)
        x_global = from_heads(F.scaled_dot_product_attention(qh, kh, vh), q)[0]
        x_local = F.silu(seen[(stage, "local_mixer")])[0]
        row, col = min(py // stride, q.shape[-2] - 1), min(px // stride, q.shape[-1] - 1)
        query = qh[0, :, row * q.shape[-1] + col]  # (heads, head_dim)
        weights = (torch.einsum("hd,hnd->hn", query, kh[0]) * attn.head_dim**-0.5).softmax(dim=-1).mean(0)
        attention_kv = weights.reshape(k.shape[-2:])
        kv_stride = stride * attn.window_size
        maps.append(
            StageMaps(
                stage=stage,
                block=index,
                stride=stride,
                kv_stride=kv_stride,
                interaction=attn.interaction,
                x_local=x_local,
                x_global=x_global,
                local_gate=_to_image(torch.sigmoid(x_local).mean(0), stride, (height, width)),
                global_gate=_to_image(torch.sigmoid(x_global).mean(0), stride, (height, width)),
                attention_kv=attention_kv,
                attention=_spread(attention_kv, kv_stride, (height, width)),
                query=(row, col),
            )
        )
    return logits, maps


def class_activation_map(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Grad-CAM of class ``target`` on the last stage of ``model`` for one image: (H, W) in [0, 1].

    The ``grad-cam`` package computes it; its gradients are cleared from the model afterwards.
    A last stage of one cell (small inputs) gives a map of zeros: Grad-CAM has nothing to locate.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layers = getattr(model, "layers", None)
    if layers is None:
        raise FatvitError(f"{type(model).__name__} is not a FAT model: no stages for Grad-CAM")
    was_training = model.training
    try:
        with torch.enable_grad(), GradCAM(model=model, target_layers=[layers[-1]]) as cam:
            grey = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return torch.from_numpy(grey[0]).float().clamp(0, 1)


def explain(
    model: nn.Module,
    x: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    point: Optional[Tuple[int, int]] = None,
    target: Optional[int] = None,
    block: int = -1,
    classes: Optional[Sequence[str]] = None,
) -> Explanation:
    """FASA's maps for every stage and the class activation map, for one normalised image ``x`` (1, 3, H, W).

    Args:
        mean, std: the normalisation ``x`` went through (to show the image as the model sees it).
        point: the attention's query (x, y) in input pixels (default: the centre).
        target: the class for the CAM (default: the predicted one).
        block: which block of each stage (default: the last).
        classes: class names, for the figure.
    """
    model.eval()
    point = point if point is not None else _centre(x)
    logits, stages = fasa_maps(model, x, point, block)
    probs = logits[0].float().softmax(0)
    target = int(probs.argmax()) if target is None else target
    if not 0 <= target < probs.numel():
        raise FatvitError(f"class index {target} is out of range (the model has {probs.numel()} classes)")
    cam = class_activation_map(model, x, target)
    image = x[0].detach().float().cpu() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return Explanation(image.clamp(0, 1), probs, target, point, cam, stages, list(classes) if classes else None)


def map_point(transform: Any, size: Tuple[int, int], point: Tuple[float, float]) -> Tuple[int, int]:
    """Where pixel ``point`` (x, y) of an image of ``size`` (width, height) lands in the model's input.

    Follows the geometric steps of a torchvision ``Compose`` (``Resize``, ``CenterCrop``); the others
    (``ToTensor``, ``Normalize``) leave pixels in place.

    Raises:
        FatvitError: a geometric step it cannot follow, or a point outside the image or the crop.
    """
    from torchvision import transforms as T
    from torchvision.transforms.functional import _compute_resized_output_size

    x, y = float(point[0]), float(point[1])
    width, height = size
    if not (0 <= x < width and 0 <= y < height):
        raise FatvitError(f"point ({point[0]}, {point[1]}) lies outside the {width}x{height} image")
    x, y = x + 0.5, y + 0.5  # pixel centres, in continuous coordinates
    for step in getattr(transform, "transforms", [transform]):
        if isinstance(step, T.Resize):
            size_arg = [step.size] if isinstance(step.size, int) else list(step.size)
            new_h, new_w = _compute_resized_output_size((height, width), size_arg, step.max_size)
            x, y = x * new_w / width, y * new_h / height
            width, height = new_w, new_h
        elif isinstance(step, T.CenterCrop):
            crop_h, crop_w = step.size
            pad_left, pad_top = max(crop_w - width, 0) // 2, max(crop_h - height, 0) // 2
            x, y = x + pad_left, y + pad_top
            width, height = max(width, crop_w), max(height, crop_h)
            x, y = x - int(round((width - crop_w) / 2.0)), y - int(round((height - crop_h) / 2.0))
            width, height = crop_w, crop_h
        elif step.__class__.__name__ not in ("ToTensor", "MaybeToTensor", "Normalize", "PILToTensor",
                                             "ConvertImageDtype", "MaybePILToTensor"):  # fmt: skip
            raise FatvitError(f"cannot follow a point through the preprocessing step {step!r}")
    if not (0 <= x < width and 0 <= y < height):
        raise FatvitError(f"point ({point[0]}, {point[1]}) falls outside the centre crop the model sees")
    return int(x), int(y)


def explain_image(
    classifier: Any,
    image: Any,
    point: Optional[Tuple[float, float]] = None,
    target: Optional[int] = None,
    block: int = -1,
) -> Explanation:
    """:func:`explain` for an image file (or PIL image), preprocessed as ``classifier`` records.

    Args:
        classifier: a :class:`fatvit.tasks.classification.inference.Classifier`.
        image: a path or a PIL image.
        point: the attention's query (x, y) in pixels of the image as given (default: the centre of what
            the model sees).
    """
    from torchvision import transforms as T

    if not hasattr(image, "size"):
        try:
            image = load_rgb(str(image))
        except FileNotFoundError:
            raise FatvitError(f"image not found: {image}") from None
        except Exception as err:
            raise FatvitError(f"cannot read image {image}: {type(err).__name__}: {err}") from None
    x = classifier.transform(image.convert("RGB"))[None]
    norm = next((t for t in getattr(classifier.transform, "transforms", []) if isinstance(t, T.Normalize)), None)
    mean = [float(m) for m in norm.mean] if norm is not None else [0.0, 0.0, 0.0]
    std = [float(s) for s in norm.std] if norm is not None else [1.0, 1.0, 1.0]
    at = map_point(classifier.transform, image.size, point) if point is not None else None
    return explain(classifier.model, x, mean, std, at, target, block, classifier.classes)


#: Below this spread (max - min) a map is drawn as flat: it shows no structure, only rounding.
FLAT_SPREAD = 1e-6


def map_notes(explanation: Explanation) -> Dict[str, str]:
    """What a panel of :func:`plot_explanation` cannot show, by panel (``"cam"``, ``"stage N attention"``):
    a Grad-CAM that is empty or flat, an attention over a single key cell (weight 1 by construction) or
    spread evenly over its key cells. Panels that carry information have no note."""
    e = explanation
    notes = {}
    if float(e.cam.max()) <= FLAT_SPREAD:
        notes["cam"] = "empty: no positive gradient-weighted activation for this class"
    elif float(e.cam.max() - e.cam.min()) <= FLAT_SPREAD:
        notes["cam"] = "flat: the same relevance everywhere"
    for s in e.stages:
        cells = s.attention_kv.numel()
        key = f"stage {s.stage + 1} attention"
        if cells == 1:
            notes[key] = "one key cell: weight 1 by construction, no spatial information"
        elif float(s.attention_kv.max() - s.attention_kv.min()) <= FLAT_SPREAD:
            notes[key] = f"even over its {cells} key cells: no preference"
    return notes


def plot_explanation(explanation: Explanation, title: str = "") -> Any:
    """A matplotlib figure: the image and its CAM, then per stage the two gates and the attention from the point.

    Scales are fixed and stated, never stretched to a map's own range (which makes noise look like structure):
    Grad-CAM on [0, 1], gates on [0, 1] with their observed range in the title, attention on [0, 1] as the
    weight of each key cell. Colour bars carry plain numbers (no offset notation); a panel that carries no
    information says so (:func:`map_notes`).
    """
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    e = explanation
    notes = map_notes(e)
    rgb = e.image.permute(1, 2, 0).numpy()
    grey = e.image.mean(0).numpy()
    rows = 1 + len(e.stages)
    fig, axes = plt.subplots(rows, 3, figsize=(10.5, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()

    def overlay(ax: Any, heat: torch.Tensor, label: str, cmap: str, bar: str, note: str = "") -> None:
        ax.imshow(grey, cmap="gray", interpolation="nearest")
        shown = ax.imshow(heat.numpy(), cmap=cmap, alpha=0.65, vmin=0.0, vmax=1.0, interpolation="nearest")
        colorbar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, ticks=[0, 0.25, 0.5, 0.75, 1])
        colorbar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))
        colorbar.ax.tick_params(labelsize=7)
        colorbar.set_label(bar, fontsize=8)
        ax.set_title(label, fontsize=8)
        if note:
            ax.text(0.5, 0.5, textwrap.fill(note, 28), transform=ax.transAxes, ha="center", va="center",
                    fontsize=8, bbox=dict(boxstyle="round", facecolor="white", alpha=0.85))  # fmt: skip

    axes[0, 0].imshow(rgb, interpolation="nearest")
    axes[0, 0].plot(*e.point, marker="+", color="red", markersize=12, mew=2)
    axes[0, 0].set_title("input (+: query point)", fontsize=8)
    overlay(axes[0, 1], e.cam, f"Grad-CAM, last stage: {e.target_name}", "jet", "relevance (0-1)",
            notes.get("cam", ""))  # fmt: skip
    top = e.probs.topk(min(5, e.probs.numel()))
    names = [e.classes[i] if e.classes else str(i) for i in top.indices.tolist()]
    axes[0, 2].text(
        0.0,
        0.95,
        "top classes\n" + "\n".join(f"{n}: {100 * p:.1f}%" for n, p in zip(names, top.values.tolist())),
        va="top",
        family="monospace",
        fontsize=10,
    )
    size = tuple(e.image.shape[-2:])
    for r, s in enumerate(e.stages, start=1):
        n = s.stage + 1
        for c, (gate, applied, branch) in enumerate(
            ((s.local_gate, s.local_gate_applied, "local"), (s.global_gate, s.global_gate_applied, "global"))
        ):
            spread = f"\nrange {float(gate.min()):.3f} to {float(gate.max()):.3f}"
            note = "" if applied else f"\n(not applied: {s.interaction})"
            overlay(axes[r, c], gate, f"stage {n} {branch} gate σ(X'{branch}){spread}{note}", "viridis",
                    "mean gate (0-1)")  # fmt: skip
        cells = _expand(s.attention_kv, s.kv_stride, size)
        h, w = s.attention_kv.shape
        label = f"stage {n} attention from +\n{h}x{w} key cells of {s.kv_stride}px"
        overlay(axes[r, 2], cells, label, "magma", "weight of a key cell (0-1)", notes.get(f"stage {n} attention", ""))
        axes[r, 2].plot(*e.point, marker="+", color="cyan", markersize=12, mew=2)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985 if title else 1))  # the title above the panels' own
    return fig
