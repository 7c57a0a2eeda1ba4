"""Launched by tests/engine/test_distributed.py under torchrun: trains a few steps and writes each rank's parameters.

Arguments: the output folder, the data, and the task (``classify``, default, or ``detect``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from conftest import FAST_RECIPE, TINY_MODEL_OVERRIDES
from fatvit.config import load_config
from fatvit.engine import Trainer
from fatvit.tasks.detection.config import DetectConfig


def main() -> None:
    out, data = Path(sys.argv[1]), sys.argv[2]
    task = sys.argv[3] if len(sys.argv) > 3 else "classify"
    common = [f"data={data}", f"output={out / 'run'}", "epochs=2", "batch_size=2"]
    if task == "detect":
        recipe = [*TINY_MODEL_OVERRIDES, "model=mask_rcnn_fat_b0", "backbone_weights=none", "min_size=64",
                  "max_size=64", "workers=0", "warmup_steps=1", "decay_milestones=[1]", "lr_base_batch=4", "lr=1e-3",
                  *common]  # fmt: skip
        cfg = load_config(None, recipe, cls=DetectConfig)
    else:
        cfg = load_config(None, [*FAST_RECIPE, *common])
    trainer = Trainer(cfg, max_steps=4)
    initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    summary = trainer.fit()
    rank = trainer.dist.rank
    params = {n: p.detach() for n, p in trainer.model.named_parameters()}
    torch.save({"initial": initial, "final": params}, out / f"rank{rank}.pt")
    info = dict(rank=rank, world_size=trainer.dist.world_size, global_batch=trainer.opt.global_batch, lr=trainer.opt.lr,
                steps=summary["steps"], shard=list(trainer.data.train_sampler))  # fmt: skip
    (out / f"rank{rank}.json").write_text(json.dumps(info))
    trainer.close()


if __name__ == "__main__":
    main()
