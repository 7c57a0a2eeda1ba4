"""The evaluation skeleton every task plugs its per-batch step into: placement, precision, skipped images, counts."""

from __future__ import annotations

import contextlib

import torch

from fatvit.tasks.base import evaluate_batches


def _batches():
    """Two batches of images (the second with one unreadable image left out) and one with none readable."""
    return [
        (torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), 0),
        (torch.rand(1, 3, 8, 8), torch.tensor([1]), 1),
        (torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), 2),
    ]


def test_the_step_runs_placed_in_channels_last_under_autocast_and_the_counts_are_summed():
    model = torch.nn.Conv2d(3, 4, 1).train()
    seen = []

    def step(images, targets, run):
        def forward(x):
            seen.append((x.is_contiguous(memory_format=torch.channels_last), torch.is_autocast_enabled("cpu")))
            return model(x)

        out = run(forward, images)
        assert out.dtype == torch.bfloat16 and len(out) == len(targets)
        return len(images)

    result = evaluate_batches(model, _batches(), step, lambda: {"score": 1.0}, torch.device("cpu"), torch.bfloat16,
                              channels_last=True)  # fmt: skip
    assert not model.training
    assert seen == [(True, True), (True, True)]  # the batch without a readable image is not stepped
    assert (result["score"], result["images"], result["skipped_images"]) == (1.0, 3, 3)
    assert result["images_per_s"] > 0


def test_float32_contiguous_lists_and_a_task_s_own_autocast():
    entered = []

    @contextlib.contextmanager
    def own(model, device, dtype):
        entered.append(dtype is torch.bfloat16)
        yield

    def step(images, targets, run):
        placed, autocast = run(lambda x: (x, torch.is_autocast_enabled("cpu")), list(images))  # a detector's list
        assert isinstance(placed, list) and all(t.is_contiguous() for t in placed) and not autocast
        return len(placed)

    model = torch.nn.Identity()
    result = evaluate_batches(model, _batches(), step, dict, torch.device("cpu"), torch.bfloat16, autocast=own)
    assert entered == [True, True] and result["images"] == 3

    def plain(images, targets, run):
        assert run(lambda x: (model(x).dtype, torch.is_autocast_enabled("cpu")), images) == (torch.float32, False)
        return len(images)

    evaluate_batches(model, _batches(), plain, dict, torch.device("cpu"))
