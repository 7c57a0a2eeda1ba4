"""`fatvit summary`: every size agrees with the paper's parameters and FLOPs."""

from __future__ import annotations

import json

import pytest
import timm

from fatvit.cli import main
from fatvit.flops import matches_paper, model_cost
from fatvit.tables import summarize


@pytest.fixture(scope="module")
def rows():
    return {r["model"]: r for r in summarize()}


def test_every_size_matches_the_paper(rows):
    assert len(rows) == 7
    for name, r in rows.items():
        assert r["matches_paper"], r
        # beyond rounding: never further than the paper's printed precision allows
        assert abs(r["params_rel_diff"]) < 0.012, name
        assert abs(r["gflops_rel_diff"]) < 0.03, name


def test_flop_conventions_match_architecture_notes(rows):
    # ARCHITECTURE.md: conv+linear GMACs and fvcore full counts of the released sizes
    expected = {"fat_b0": (0.701, 0.765), "fat_b1": (1.173, 1.258), "fat_b2": (2.038, 2.150), "fat_b3": (4.425, 4.672)}
    for name, (conv_linear, full) in expected.items():
        assert rows[name]["conv_linear_gmacs"] == pytest.approx(conv_linear, abs=1e-3)
        assert rows[name]["full_gflops"] == pytest.approx(full, abs=1e-3)
    assert rows["fat_b3_st"]["full_gflops"] == pytest.approx(4.65, abs=0.01)


def test_full_count_includes_attention():
    model = timm.create_model("fat_b0")
    small, large = model_cost(model, (3, 112, 112)), model_cost(model, (3, 224, 224))
    # convolutions scale with pixels (x4); attention with pixels times pooled pixels (x16 for the last stage)
    assert large.conv_linear_gmacs / small.conv_linear_gmacs == pytest.approx(4, rel=0.05)
    assert (large.full_gflops - large.conv_linear_gmacs) > 4.5 * (small.full_gflops - small.conv_linear_gmacs)


def test_matches_paper_rule():
    assert matches_paper(29.32, "29", 0.01)  # prints as the paper's figure
    assert not matches_paper(51.21, "52", 0.01)  # neither within 1% nor printed the same
    assert matches_paper(4.49, "4.5", 0.01)
    assert not matches_paper(2.1, "2.0", 0.03)


def test_summary_cli_json(capsys):
    assert main(["summary", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows][0] == "fat_b0"
    assert {"params_m", "conv_linear_gmacs", "full_gflops", "paper_params_m", "paper_gflops"} <= set(rows[0])
