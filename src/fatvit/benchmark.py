"""Latency and throughput of FAT models against timm peers, in every execution mode, measured side by side.

Modes (:data:`MODES`):

* ``eager``: the model as built, in eval mode, channels-first input;
* ``deployed``: FAT through :func:`fatvit.deploy`; a timm peer through
  ``timm.utils.reparameterize_model`` and channels-last memory, its own
  inference form;
* ``compiled``: ``torch.compile`` (inductor, weights frozen) of the deployed form;
* ``onnxruntime``: the deployed form (1x1 convs kept as convs, channels-first)
  exported to ONNX (:mod:`fatvit.export`) and run by ONNX Runtime's CPU
  provider, with the shapes of the run fixed;
* ``onnxruntime-int8`` (not in the default modes): that ONNX file quantized
  by :func:`fatvit.quantize.quantize_onnx` (QDQ, int8 per-channel weights,
  the convolutions), calibrated on the timed batch and three random ones
  (random weights: only speed is measured), run by ONNX Runtime;
* ``openvino`` (the ``openvino`` extra, not in the default modes): the same
  ONNX file compiled by OpenVINO for the CPU (latency hint, float32, torch's
  thread count), its outputs checked against PyTorch's first
  (:data:`OPENVINO_TOLERANCE`);
* ``openvino-int8`` (the ``openvino`` extra, not in the default modes): the
  int8 file of ``onnxruntime-int8`` compiled by OpenVINO, which runs the
  quantized convolutions with its own int8 kernels (float32 elsewhere).

Within one mode and batch size every model is timed in the same rounds,
interleaved in a shuffled order, so that the machine's drift falls on all of
them alike; the median over rounds is reported with its quartiles, and the
ratio to a baseline model measured in that same mode and batch. Only ratios
mean something across machines.

``authors:NAME`` is FAT size NAME run as the authors' released code runs it
(:class:`fatvit.models.released.ReleasedFAT`, channels-first). The released
code has no inference form: in ``deployed`` mode it runs as released, so
that fatvit's deployed model is timed side by side with it; ``compiled`` and
``onnxruntime`` compile and export it as it is.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .catalog import ALL_MODES, AUTHORS_PREFIX, DEFAULT_MODELS, MODES
from .deploy import compile_inference, deploy
from .errors import FatvitError, require
from .models import MODEL_CONFIGS
from .models.released import ReleasedFAT

__all__ = [
    "MODES",
    "DEFAULT_MODELS",
    "PEER_TOP1",
    "AUTHORS_PREFIX",
    "Candidate",
    "build_candidate",
    "prepare_runner",
    "prepare_training_step",
    "time_interleaved",
    "run_benchmark",
    "plot_latency",
]


#: ImageNet-1k top-1 (%) of the default peers' timm weights, from timm's results-imagenet.csv, each at its
#: pretrained resolution (mobilevit_xs 256, edgenext_x_small 288, edgenext_small 320, efficientnet_b1 256,
#: efficientnet_b3 320). FAT's come from the paper (MODEL_CONFIGS).
PEER_TOP1 = {
    "mobilevit_xs": 74.636,
    "edgenext_x_small": 75.688,
    "edgenext_small": 81.564,
    "efficientnet_b1": 78.800,
    "efficientnet_b3": 82.242,
}


@dataclass
class Candidate:
    """One model of a benchmark: its eval-mode module, input size and reported top-1 (None if unknown)."""

    name: str
    model: nn.Module
    input_size: Tuple[int, int]
    top1: Optional[float]

    @property
    def is_fat(self) -> bool:
        return self.name in MODEL_CONFIGS

    @property
    def is_authors(self) -> bool:
        return self.name.startswith(AUTHORS_PREFIX)

    @property
    def params_m(self) -> float:
        return sum(p.numel() for p in self.model.parameters()) / 1e6


def build_candidate(name: str, img_size: int = 224, native_size: bool = False) -> Candidate:
    """The eval-mode model ``name`` (a FAT size, ``authors:`` + a FAT size, or any timm model) with random weights.

    FAT runs at ``img_size``; a peer too, unless ``native_size`` (its pretrained resolution).
    """
    if name.startswith(AUTHORS_PREFIX):
        size = name[len(AUTHORS_PREFIX) :]
        if size not in MODEL_CONFIGS:
            raise FatvitError(f"{name}: after {AUTHORS_PREFIX!r} comes a FAT size ({', '.join(MODEL_CONFIGS)})")
        model = ReleasedFAT(timm.create_model(size, interaction="reference")).eval()
        return Candidate(name, model, (img_size, img_size), MODEL_CONFIGS[size].paper_top1)
    try:
        model = timm.create_model(name).eval()
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise FatvitError(f"unknown model {name!r}: {err}") from err
    if name in MODEL_CONFIGS:
        return Candidate(name, model, (img_size, img_size), MODEL_CONFIGS[name].paper_top1)
    size = tuple(model.pretrained_cfg["input_size"][-2:]) if native_size else (img_size, img_size)
    return Candidate(name, model, size, PEER_TOP1.get(name))


def _inference_form(candidate: Candidate, for_onnx: bool = False) -> nn.Module:
    """The model's inference form: fatvit.deploy for FAT, else timm's reparameterisation; channels-last for PyTorch."""
    if candidate.is_authors:  # the released code, as released
        return candidate.model
    if candidate.is_fat:
        return deploy(candidate.model, channels_last=not for_onnx, pointwise_linear=not for_onnx)
    model = timm.utils.reparameterize_model(candidate.model).eval().requires_grad_(False)
    return model if for_onnx else model.to(memory_format=torch.channels_last)


def prepare_runner(candidate: Candidate, mode: str, batch: int, workdir: Path) -> Callable[[], Any]:
    """A function of no arguments that runs one forward of ``candidate`` in ``mode`` on a fixed random batch.

    Compilation and ONNX export happen here, and one call is made (under
    ``torch.inference_mode``, as the timing), so that the returned runner is warm.
    The ONNX modes share one export (and the int8 modes one quantization) of a
    model and batch size in ``workdir``: a file already there is taken as it is.
    """
    if mode not in ALL_MODES:
        raise FatvitError(f"unknown mode {mode!r}; modes: {', '.join(ALL_MODES)}")
    x = torch.randn(batch, 3, *candidate.input_size, generator=torch.Generator().manual_seed(0))
    if mode in ONNX_MODES:
        from .export import export_onnx, onnx_session

        path = workdir / f"{candidate.name.replace(':', '_')}_{batch}.onnx"
        model = _inference_form(candidate, for_onnx=True)
        if not path.is_file():
            export_onnx(model, path, img_size=candidate.input_size, dynamic=False, batch=batch, fuse=False)
        if mode.endswith("-int8"):
            from .quantize import quantize_onnx

            int8 = path.with_name(path.stem + "_int8.onnx")
            if not int8.is_file():
                generator = torch.Generator().manual_seed(1)
                calibration = [x.numpy()] + [torch.randn(x.shape, generator=generator).numpy() for _ in range(3)]
                quantize_onnx(path, int8, calibration)
            path = int8
        if mode in OPENVINO_MODES:  # int8 outputs differ from PyTorch's by design: fatvit quantize measures that
            run = _openvino_runner(path, None if mode.endswith("-int8") else model, x, candidate.name)
        else:
            session = onnx_session(path, spinning=False)  # sessions take turns on the cores
            feed = {session.get_inputs()[0].name: x.numpy()}

            def run() -> Any:
                return session.run(None, feed)

    else:
        model = candidate.model
        if mode != "eager":
            model = _inference_form(candidate)
            if mode == "compiled":
                model = compile_inference(model)
            if not candidate.is_authors:  # the released code is channels-first
                x = x.contiguous(memory_format=torch.channels_last)

        def run() -> Any:
            return model(x)

    with torch.inference_mode():
        run()
    return run


#: The modes that run an ONNX export of the model (the ``onnx`` extra).
ONNX_MODES = ("onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8")

#: The modes that run OpenVINO (the ``openvino`` extra).
OPENVINO_MODES = ("openvino", "openvino-int8")

#: Largest difference of OpenVINO's outputs from PyTorch's that ``openvino`` mode accepts: max abs, over the
#: largest PyTorch output when that is above 1 (random weights give peers large logits).
OPENVINO_TOLERANCE = 1e-4


def _openvino_runner(path: Path, model: Optional[nn.Module], x: torch.Tensor, name: str) -> Callable[[], Any]:
    """A runner of ``path`` compiled by OpenVINO, after checking its output on ``x`` against ``model``'s (unless
    ``model`` is None)."""
    import numpy as np

    from .runtime import openvino_model

    compiled = openvino_model(path)
    request = compiled.create_infer_request()
    feed = {0: np.ascontiguousarray(x.numpy())}

    def run() -> Any:
        return request.infer(feed)

    if model is not None:
        got = torch.from_numpy(np.array(run()[compiled.output(0)]))
        with torch.inference_mode():
            expected = model(x)
        scale = max(1.0, float(expected.abs().max()))
        difference = float((got - expected).abs().max())
        if difference > OPENVINO_TOLERANCE * scale:
            raise FatvitError(f"{name}: OpenVINO's outputs differ from PyTorch's by {difference:.2e} (over "
                              f"{OPENVINO_TOLERANCE:g} x {scale:.3g})")  # fmt: skip
    return run


def prepare_training_step(name: str, batch_size: int, img_size: int = 224) -> Tuple[nn.Module, Callable[[], None]]:
    """``name``'s model in train mode, and a function of no arguments that runs one CPU training step of it.

    A step is forward, cross-entropy, backward and the optimizer step, on a
    fixed random batch. ``authors:`` + a FAT size trains as the released
    code does (channels-first, timm's AdamW in its default implementation);
    any other model with fatvit's training defaults (channels-last, the
    Trainer's optimizer: :func:`fatvit.engine.create_optimizer`).
    """
    from timm.optim import create_optimizer_v2

    from .engine import create_optimizer

    candidate = build_candidate(name, img_size)
    model = candidate.model.train()
    x = torch.randn(batch_size, 3, *candidate.input_size)
    y = torch.randint(0, 1000, (batch_size,))
    if candidate.is_authors:
        optimizer = create_optimizer_v2(model, "adamw", lr=1e-4, weight_decay=0.05)
    else:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        optimizer = create_optimizer(model, "adamw", lr=1e-4, weight_decay=0.05)

    def step() -> None:
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def time_interleaved(
    runners: Dict[str, Callable[[], Any]], rounds: int, warmup: int, seed: int = 0
) -> Dict[str, List[float]]:
    """Seconds per call of each runner: ``warmup`` untimed rounds, then ``rounds`` timed ones, each shuffled anew."""
    times: Dict[str, List[float]] = {name: [] for name in runners}
    order = list(runners)
    rng = random.Random(seed)
    with torch.inference_mode():
        for r in range(warmup + rounds):
            rng.shuffle(order)
            for name in order:
                start = time.perf_counter()
                runners[name]()
                if r >= warmup:
                    times[name].append(time.perf_counter() - start)
    return times


def _quartiles(values: Sequence[float]) -> Tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def run_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    modes: Sequence[str] = MODES,
    batch_sizes: Sequence[int] = (1, 16),
    rounds: int = 20,
    warmup: int = 3,
    img_size: int = 224,
    native_size: bool = False,
    baseline: Optional[str] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> List[Dict[str, Any]]:
    """Time ``models`` in each of ``modes`` at each batch size; one record per model, mode and batch.

    Records: ``model``, ``mode``, ``batch``, ``input`` ("HxW"), ``params_m``,
    ``median_ms``, ``p25_ms``, ``p75_ms``, ``images_per_s``, ``ratio`` (the
    median over the baseline's median in the same mode and batch; None where
    the baseline has no record) and ``top1`` (ImageNet, None if unknown).
    """
    for mode in modes:
        if mode not in ALL_MODES:
            raise FatvitError(f"unknown mode {mode!r}; modes: {', '.join(ALL_MODES)}")
    if any(mode in ONNX_MODES for mode in modes):  # a missing extra before any model is timed
        from .export import require_onnx

        require_onnx()
    if any(mode in OPENVINO_MODES for mode in modes):
        require("openvino", "openvino")
    if not models:
        raise FatvitError("no models to benchmark")
    baseline = baseline or models[0]
    if baseline not in models:
        raise FatvitError(f"the baseline {baseline!r} is not among the models benchmarked")
    candidates = [build_candidate(name, img_size, native_size) for name in dict.fromkeys(models)]
    records: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fatvit-benchmark-") as tmp:
        for mode in modes:
            for batch in batch_sizes:
                runners = {}
                for candidate in candidates:
                    if progress:
                        progress(f"{mode}, batch {batch}: preparing {candidate.name}")
                    try:
                        runners[candidate.name] = prepare_runner(candidate, mode, batch, Path(tmp))
                    except FatvitError:
                        raise
                    except Exception as err:  # the model itself fails on this input, or its compilation
                        size = "x".join(map(str, candidate.input_size))
                        raise FatvitError(
                            f"{candidate.name} fails in {mode} mode at batch {batch}, {size}: "
                            f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
                        ) from err
                if progress:
                    progress(f"{mode}, batch {batch}: timing {len(runners)} models, {rounds} rounds")
                times = time_interleaved(runners, rounds, warmup)
                base = statistics.median(times[baseline]) if baseline in times else None
                for candidate in candidates:
                    if candidate.name not in times:
                        continue
                    p25, median, p75 = _quartiles(times[candidate.name])
                    records.append(
                        dict(
                            model=candidate.name,
                            mode=mode,
                            batch=batch,
                            input=f"{candidate.input_size[0]}x{candidate.input_size[1]}",
                            params_m=round(candidate.params_m, 2),
                            median_ms=round(1000 * median, 3),
                            p25_ms=round(1000 * p25, 3),
                            p75_ms=round(1000 * p75, 3),
                            images_per_s=round(batch / median, 1),
                            ratio=round(median / base, 3) if base else None,
                            top1=candidate.top1,
                        )
                    )
    return records


def plot_latency(records: Sequence[Dict[str, Any]], path: Path, batch: int = 1) -> Path:
    """A PNG of ImageNet top-1 against median latency at ``batch``, one panel per mode.

    Models without a known top-1 are left out of the plot (they stay in the records).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .files import atomic_write

    modes = [m for m in ALL_MODES if any(r["mode"] == m and r["batch"] == batch for r in records)]
    if not modes:
        raise FatvitError(f"no records at batch {batch} to plot")
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 3.8), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rows = [r for r in records if r["mode"] == mode and r["batch"] == batch and r["top1"] is not None]
        for r in rows:
            fat = r["model"].startswith("fat_")
            marker, color = ("*", "tab:red") if fat else ("o", "tab:blue")
            if r["model"].startswith(AUTHORS_PREFIX):
                marker, color = "x", "tab:gray"
            spread = [[r["median_ms"] - r["p25_ms"]], [r["p75_ms"] - r["median_ms"]]]
            ax.errorbar(r["median_ms"], r["top1"], xerr=spread, fmt=marker, color=color, markersize=10 if fat else 6,
                        capsize=2)  # fmt: skip
            below = r["model"].startswith(AUTHORS_PREFIX)  # it sits on its FAT size's point
            ax.annotate(r["model"], (r["median_ms"], r["top1"]), textcoords="offset points",
                        xytext=(4, -10 if below else 4), fontsize=7)  # fmt: skip
        ax.set_title(f"{mode}, batch {batch}")
        ax.set_xlabel("median latency (ms), quartile bars")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ImageNet top-1 (%): paper (FAT), timm (peers)")
    fig.suptitle(f"CPU latency, {torch.get_num_threads()} threads", fontsize=10)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path
