"""What ``fatvit detect`` and ``fatvit segment`` share: their train/eval/predict sub-verbs' common options."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..config import AMP_MODES, DEFAULT_WORKERS
from ..errors import FatvitError
from ..files import check_output_dir, prepare_output_dir
from .format import add_set_option, non_negative_int, positive_int


def add_actions(p: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=type(p))


def add_task_parsers(sub: argparse._SubParsersAction, name: str, help: str, description: str,
                     actions: Dict[str, Tuple[str, str]]) -> Dict[str, argparse.ArgumentParser]:  # fmt: skip
    """The parser of a task's verb (``fatvit detect``) and those of its ``actions`` (train, eval, predict,
    export), each made from its (help, description)."""
    p = sub.add_parser(name, help=help, description=description)
    sub_actions = add_actions(p)
    return {action: sub_actions.add_parser(action, help=h, description=d) for action, (h, d) in actions.items()}


def add_settings_option(p: argparse.ArgumentParser, settings: Sequence[str]) -> None:
    """``--set KEY=VALUE`` for the ``settings`` a task's file records (its model's inference settings)."""
    add_set_option(p, f"change a setting the file records ({', '.join(settings)}); YAML value; repeatable")


def add_eval_options(p: argparse.ArgumentParser, data_help: str, settings: Sequence[str], batches: bool = True) -> None:
    """The options of an ``eval`` sub-verb; ``batches``: it takes --batch-size."""
    p.add_argument("--checkpoint", required=True, help="a checkpoint or model.safetensors of a training run")
    p.add_argument("--data", help=data_help)
    p.add_argument("--split", choices=("val", "train"), default="val", help="which split (default: val)")
    if batches:
        p.add_argument("--batch-size", type=positive_int, default=2, help="images per batch (default: 2)")
    workers = f"data loading processes (default: {DEFAULT_WORKERS}, at most the cores available)"
    p.add_argument("--workers", type=non_negative_int, default=None, metavar="N", help=workers)
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights of a training checkpoint")
    amp = ("mixed precision, as the training config's amp: none (default, float32), bf16, fp16, or auto "
           "(CUDA: bf16 where supported, else fp16; CPU: none)")  # fmt: skip
    p.add_argument("--amp", choices=AMP_MODES, default="none", help=amp)
    add_settings_option(p, settings)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def add_export_options(p: argparse.ArgumentParser) -> None:
    """The options of an ``export`` sub-verb."""
    from ..catalog import DEFAULT_OPSET

    p.add_argument("--checkpoint", required=True, help="a checkpoint or model.safetensors of a training run")
    p.add_argument("--output", required=True, metavar="FILE.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument("--ema", action="store_true", help="export the EMA weights of a training checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (once the new one "
                   "passed its check)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the check's records as JSON")


@contextlib.contextmanager
def checked_file(output: Path) -> Iterator[Path]:
    """A temporary path next to ``output`` to export to and check; moved to ``output`` if the block succeeds,
    removed if it fails, so that a failed export neither leaves a file nor replaces the one there."""
    import os

    partial = output.with_name(output.name + ".partial")
    try:
        yield partial
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def add_predict_options(p: argparse.ArgumentParser, settings: Sequence[str]) -> None:
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders")
    p.add_argument("--checkpoint", required=True, help="a checkpoint or model.safetensors of a training run")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the drawn images (<name>.png)")
    p.add_argument("--overwrite", action="store_true", help="replace drawn images already in --output")
    p.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                   help="image reading processes (default: 0, images read in this process)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--ema", action="store_true", help="use the EMA weights of a training checkpoint")
    add_settings_option(p, settings)
    p.add_argument("--json", action="store_true", help="print one JSON record per image")


def workers_of(args: argparse.Namespace) -> int:
    """The loader workers an eval sub-verb uses: --workers, else the default (at most the cores available)."""
    from ..data import default_workers

    return default_workers() if args.workers is None else args.workers


def check_device(device: str) -> str:
    """``--device`` checked as the config key ``device`` is (the same names), and the device it picks."""
    from ..config import DEVICE_NAMES, is_device_name
    from ..distributed import pick_device

    if not is_device_name(device):
        raise FatvitError(f"--device must be {DEVICE_NAMES}, got {device!r}")
    return str(pick_device(device))


def output_paths(inputs: Sequence[str], output: str, overwrite: bool) -> List[tuple]:
    """(image, drawn image) pairs: every image the inputs name, and ``OUTPUT/<stem>.png`` for it; checked
    before any work (a name taken twice, or a file there without ``overwrite``, is an error). The folder is
    not made here: see :func:`drawing_folder`."""
    from ..tasks.classification.predict import find_images

    images = find_images(inputs)
    out = check_output_dir(output)
    pairs, seen = [], {}
    for image in images:
        target = out / f"{image.stem}.png"
        if target in seen:
            raise FatvitError(f"{image} and {seen[target]} would both be drawn as {target}: rename one")
        seen[target] = image
        if target.exists() and not overwrite:
            raise FatvitError(f"{target} exists; give --overwrite to replace it")
        pairs.append((image, target))
    return pairs


@contextlib.contextmanager
def drawing_folder(output: str) -> Iterator[Path]:
    """The folder drawn images go to, made on entry; if this call made it and nothing was written into it
    (a failed start, no readable image), it is removed on exit."""
    out = Path(output)
    made = not out.exists()
    prepare_output_dir(out)
    try:
        yield out
    finally:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _as_read(item: tuple) -> tuple:
    return item


def predict_each(
    pairs: Sequence[tuple], output: str, predict: Callable[[Path, Any, Path], Dict[str, Any]], workers: int = 0
) -> List[Dict[str, Any]]:
    """The loop of a drawing ``predict`` sub-verb over the (image, drawn image) pairs of :func:`output_paths`:
    ``predict(path, image, drawn)`` on each readable image (``image`` read once, as RGB, by ``workers`` loader
    processes or this one), which draws it as ``drawn`` in the folder ``output`` and returns its record. An
    unreadable file is reported in one line and skipped; no readable image at all is an error (and leaves no
    output folder behind)."""
    from torch.utils.data import DataLoader

    from ..data import ImageFiles, loader_workers
    from .format import report_skip

    records = []
    reads = DataLoader(ImageFiles([path for path, _ in pairs]), batch_size=None, collate_fn=_as_read,
                       num_workers=loader_workers(workers))  # fmt: skip
    with drawing_folder(output):  # removed again if nothing is drawn
        for index, image, reason in reads:
            path, drawn = pairs[index]
            if image is None:
                report_skip(path, reason)
                continue
            records.append(predict(path, image, drawn))
        if not records:
            raise FatvitError("none of the images could be read")
    return records


def model_of(args: argparse.Namespace) -> Optional[str]:
    """The model a training command names (--model, or --set model=...), if any."""
    for item in reversed(args.overrides):
        key, _, value = item.partition("=")
        if key.strip() == "model":
            return value.strip()
    return getattr(args, "model", None)


def save_png(image, path: Path) -> None:  # noqa: ANN001 - a uint8 CHW tensor
    from PIL import Image

    from ..files import atomic_write

    with atomic_write(path) as f:
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(f, format="PNG")


def trained_line(path: Any, result: Dict[str, Any]) -> str:
    """Which weights an evaluation scored: the epoch and step ``path`` was saved at (a run's ``last.pth`` and
    ``model.safetensors`` hold the last epoch, as the paper reports; ``best.pth`` the best one)."""
    if result.get("epoch") is None:
        return f"{path}: its epoch is not recorded (a file from before fatvit recorded it)"
    return f"{path}: weights after epoch {result['epoch']} (step {result['step']})"


def finished_line(summary: Dict[str, Any], figures: str, primary: str, title: str) -> str:
    """A dense run's figures for its last line: the last epoch's (those of last.pth and model.safetensors), and
    the best ``primary`` with its epoch (best.pth)."""
    best = summary.get(f"best_{primary}")
    if best is None or summary.get("best_epoch") is None:
        return figures
    return (
        f"{figures} at the last epoch ({summary['final_epoch']}, last.pth); best {title} {best:.3f} at epoch "
        f"{summary['best_epoch']} (best.pth)"
    )
