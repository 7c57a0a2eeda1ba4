"""The speed issue's GPU check, as one script: AMP throughput, AMP and torch.compile training, dense AMP steps.

1. Throughput (images/s) of FAT-B0..B2 and timm peers at batch 64, 224x224,
   eval mode, channels-last, under autocast (bf16 where the GPU supports it,
   else fp16), every model measured in the same rounds, interleaved; the
   paper reports 1932, 1452 and 1064 img/s for FAT-B0..B2.
2. Training: FAT-B0 with fatvit's defaults (channels-last, the Trainer's
   fused AdamW, its AMP setting) wrapped in ``torch.compile``, a few steps
   on one fixed random batch; the loss must stay finite and fall.
3. Dense step: RetinaNet and Semantic FPN on FAT-B0, forward and backward
   under AMP as their training tasks run them (the detector's backbone and
   neck alone under autocast, its boxes decoded in float32), a few steps on
   one fixed batch of 2 images with boxes or label maps; the losses must
   fall, and the detector's evaluation boxes must come out in float32.

Random weights; only speed and that training runs are checked. On a machine
without CUDA, ``--device cpu`` runs the same code (fp32, as fatvit's
``amp: auto`` is on CPUs)::

    python benchmarks/gpu_check.py                      # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --batch-size 2 --img-size 64 --models fat_b0 --no-compile \
        --dense-size 64 --amp bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from typing import Callable, Dict, List

import timm
import torch
import torch.nn.functional as F

import fatvit  # noqa: F401 - registers the FAT models
from fatvit.benchmark import time_interleaved
from fatvit.cli.format import render_table
from fatvit.config import AMP_MODES
from fatvit.engine import create_optimizer, resolve_amp

MODELS = ["fat_b0", "fat_b1", "fat_b2", "mobilevit_xs", "edgenext_small", "efficientnet_b1", "efficientnet_b3"]
#: the paper's throughput (img/s, batch 64) for FAT-B0..B2 and the peers it lists at 224
PAPER_IMAGES_PER_S = {"fat_b0": 1932, "fat_b1": 1452, "fat_b2": 1064, "edgenext_small": 1243}


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    dtype = resolve_amp(amp, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def throughput(
    models: List[str], device: torch.device, batch: int, img_size: int, rounds: int, amp: str = "auto"
) -> List[dict]:
    """Images/s of each model's eval forward under autocast, interleaved rounds, median."""
    runners = {}
    for name in models:
        model = timm.create_model(name).eval().to(device, memory_format=torch.channels_last)
        x = torch.randn(batch, 3, img_size, img_size, device=device).contiguous(memory_format=torch.channels_last)

        def forward(model: torch.nn.Module = model, x: torch.Tensor = x) -> torch.Tensor:
            with _autocast(device, amp):
                return model(x)

        runners[name] = _synchronized(forward, device)
    times = time_interleaved(runners, rounds=rounds, warmup=3)
    return [
        dict(model=name, batch=batch, images_per_s=round(batch / statistics.median(times[name]), 1),
             paper_images_per_s=PAPER_IMAGES_PER_S.get(name))
        for name in models
    ]  # fmt: skip


def _update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Backward and one optimizer step (through the fp16 gradient scaler when there is one)."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_check(
    device: torch.device, batch: int, img_size: int, steps: int, compile_model: bool, amp_mode: str = "auto"
) -> dict:
    """FAT-B0 trained on one fixed batch with fatvit's defaults (+ torch.compile): losses and step time."""
    torch.manual_seed(0)
    model = timm.create_model("fat_b0", num_classes=10).to(device, memory_format=torch.channels_last).train()
    optimizer = create_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05)
    amp = resolve_amp(amp_mode, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    step_model = torch.compile(model) if compile_model else model
    x = torch.randn(batch, 3, img_size, img_size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch, device=device) % 10
    losses, times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        with _autocast(device, amp_mode):
            loss = F.cross_entropy(step_model(x), y)
        _update(loss, optimizer, scaler)
        losses.append(loss.item())  # synchronizes
        times.append(time.perf_counter() - start)
    return dict(device=device.type, amp=str(amp).replace("torch.", "") if amp else "none", compiled=compile_model,
                losses=[round(v, 4) for v in losses], first_step_s=round(times[0], 2),
                step_s=round(statistics.median(times[1:]) if steps > 1 else times[0], 4))  # fmt: skip


def _dense_batch(device: torch.device, size: int) -> tuple:
    """Two fixed random images with three boxes each (10 classes), and label maps of rectangles (5 classes)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, size, size, generator=generator)
    targets, labels = [], torch.zeros(2, size, size, dtype=torch.long)
    for i in range(2):
        corners = torch.rand(3, 2, generator=generator) * size * 0.6
        boxes = torch.cat([corners, corners + size * 0.3], dim=1)
        classes = torch.randint(0, 10, (3,), generator=generator)
        targets.append(dict(boxes=boxes.to(device), labels=classes.to(device)))
        for box, c in zip(boxes.long(), classes):
            labels[i, box[1] : box[3], box[0] : box[2]] = int(c) % 4 + 1
    return images.to(device), targets, labels.to(device)


def dense_check(device: torch.device, size: int, steps: int, amp_mode: str = "auto") -> dict:
    """RetinaNet and Semantic FPN (FAT-B0) trained a few steps on one fixed batch under AMP as the tasks run it."""
    from fatvit.models.backbone import features_autocast
    from fatvit.tasks.detection.models import build_detector
    from fatvit.tasks.segmentation.models import build_segmenter
    from fatvit.tasks.segmentation.task import pixel_cross_entropy

    amp = resolve_amp(amp_mode, device)
    images, targets, labels = _dense_batch(device, size)
    torch.manual_seed(0)
    models = dict(
        retinanet=build_detector("retinanet_fat_b0", num_classes=10, min_size=size, max_size=size),
        semantic_fpn=build_segmenter("semantic_fpn_fat_b0", num_classes=5),
    )
    # the training tasks' mixed precision: the detector's backbone and neck only, the segmenter whole
    contexts = dict(retinanet=lambda: features_autocast(models["retinanet"], amp),
                    semantic_fpn=lambda: _autocast(device, amp_mode))  # fmt: skip
    report: Dict[str, object] = dict(amp=str(amp).replace("torch.", "") if amp else "none")
    for name, model in models.items():
        model.to(device).train()
        optimizer = create_optimizer(model, "adamw", lr=1e-4, weight_decay=1e-4, no_decay_1d=False)
        scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
        losses, times = [], []
        for _ in range(steps):
            start = time.perf_counter()
            with contexts[name]():
                if name == "retinanet":
                    loss = sum(model(list(images), targets).values())
                else:
                    loss = pixel_cross_entropy(model(images).float(), labels)
            _update(loss, optimizer, scaler)
            losses.append(round(loss.item(), 4))
            times.append(time.perf_counter() - start)
        record = dict(losses=losses, step_s=round(statistics.median(times[1:]) if steps > 1 else times[0], 4))
        record["ok"] = all(v == v and abs(v) != float("inf") for v in losses) and losses[-1] < losses[0]
        if name == "retinanet":
            model.eval()
            with torch.no_grad(), contexts[name]():
                (out,) = model([images[0]])
            record["eval_boxes_dtype"] = str(out["boxes"].dtype).replace("torch.", "")
            record["ok"] = record["ok"] and out["boxes"].dtype == torch.float32
        report[name] = record
    return report


def main(argv: List[str] | None = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="train without torch.compile")
    parser.add_argument("--amp", choices=AMP_MODES, default="auto", help="mixed precision, as a config's amp")
    parser.add_argument("--dense-size", type=int, default=512, help="image side of the dense step")
    parser.add_argument("--dense-steps", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available here (use --device cpu to run the code path on the CPU)")
    report: Dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "throughput": throughput(args.models, device, args.batch_size, args.img_size, args.rounds, args.amp),
        "training": train_check(
            device, args.batch_size, args.img_size, args.train_steps, not args.no_compile, args.amp
        ),
        "dense": dense_check(device, args.dense_size, args.dense_steps, args.amp),
    }
    losses = report["training"]["losses"]
    report["training"]["ok"] = all(v == v and abs(v) != float("inf") for v in losses) and losses[-1] < losses[0]
    if args.json:
        print(json.dumps(report, indent=2))
        return report
    print(f"{report['device']}: eval throughput at batch {args.batch_size}, {args.img_size}x{args.img_size}, "
          f"autocast {report['training']['amp']}")  # fmt: skip
    rows = [[r["model"], r["images_per_s"], r["paper_images_per_s"] or "-"] for r in report["throughput"]]
    print(render_table(["model", "img/s", "paper img/s"], rows))
    train = report["training"]
    print(
        f"training FAT-B0 (compiled: {train['compiled']}): first step {train['first_step_s']} s, then "
        f"{train['step_s']} s per step; loss {losses[0]} -> {losses[-1]}: {'ok' if train['ok'] else 'FAILED'}"
    )
    dense = report["dense"]
    for name in ("retinanet", "semantic_fpn"):
        r = dense[name]
        boxes = f", eval boxes {r['eval_boxes_dtype']}" if "eval_boxes_dtype" in r else ""
        print(f"dense step {name} (autocast {dense['amp']}, {args.dense_size}x{args.dense_size}, batch 2): "
              f"{r['step_s']} s per step; loss {r['losses'][0]} -> {r['losses'][-1]}{boxes}: "
              f"{'ok' if r['ok'] else 'FAILED'}")  # fmt: skip
    return report


if __name__ == "__main__":
    main()
