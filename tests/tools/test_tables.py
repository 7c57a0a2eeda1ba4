"""`fatvit table`: every paper row is met within the bounds, or documented as unmatchable."""

from __future__ import annotations

import json

import pytest

from conftest import cli_error
from fatvit.cli import main
from fatvit.tables import DENSE_PARAMS_TOL_M, GFLOPS_TOL, PARAMS_TOL_M, TABLES, measure_dense_table, measure_table

#: Our measured (params M, conv+linear GMACs) at 224x224, as the closing notes reported them: a change to a
#: variant's structure moves these.
MEASURED = {
    "add+linear": (4.49, 0.701),
    "cat+linear": (4.79, 0.754),
    "pool down": (4.44, 0.693),
    "conv w/o overlap": (4.45, 0.693),
    "conv w/ overlap": (4.47, 0.694),
    "w/o conv. pos": (4.40, 0.685),
    "Max-SA": (4.36, 0.753),
    "WSA/S-WSA": (4.36, 0.753),
    "CSWSA": (4.36, 0.758),
    "SRA": (5.29, 0.723),
    "LSA/GSA": (4.82, 0.738),
    "FASA": (4.49, 0.701),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_rows_measure_as_reported_and_meet_the_paper(name):
    rows = measure_table(name)
    assert len(rows) == len(TABLES[name])
    for r in rows:
        if r["label"] in MEASURED:
            params, gmacs = MEASURED[r["label"]]
            assert (round(r["params_m"], 2), round(r["conv_linear_gmacs"], 3)) == (params, gmacs), r
        # against the paper's printed figures: every FLOPs figure, and every parameter count but the
        # documented exceptions
        assert abs(r["conv_linear_gmacs"] - float(r["paper_gflops"])) <= GFLOPS_TOL, r
        params_ok = abs(r["params_m"] - float(r["paper_params_m"])) <= PARAMS_TOL_M
        assert params_ok != r["unmatched"], r
        assert r["within_bounds"] == params_ok, r


def test_only_the_conv_reduction_rows_are_unmatched():
    unmatched = {r.label for rows in TABLES.values() for r in rows if r.unmatched}
    assert unmatched == {"SRA", "LSA/GSA"}


def test_table_cli(capsys):
    assert main(["table", "ablation", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in rows][:3] == ["add+linear", "cat+linear", "mul+linear"]
    assert main(["table", "attention"]) == 0
    out = capsys.readouterr().out
    assert "CSWSA" in out and "notes:" in out and "NO, see note" in out


def test_paper_parameter_counts_and_cli(capsys):
    rows = measure_dense_table()
    compared = [r for r in rows if r["paper_params_m"] is not None]
    assert {r["model"] for r in compared} == {f"{h}_fat_b{i}" for h in ("retinanet", "mask_rcnn") for i in range(4)}
    for r in compared:
        assert abs(r["params_m"] - r["paper_params_m"]) <= DENSE_PARAMS_TOL_M, r
        assert r["within_bounds"] is True
    from fatvit.cli import main

    assert main(["table", "dense", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in records] == [r["model"] for r in rows]
    assert all({"model", "params_m", "paper_params_m"} <= set(r) for r in records)
    assert main(["table", "dense"]) == 0
    out = capsys.readouterr().out
    assert "retinanet_fat_b0" in out and "13.78" in out and "semantic_fpn_fat_b3" in out


def test_table_dense_unknown_table_is_one_line(capsys):
    line = cli_error(capsys, ["table", "dens"])
    assert "dense" in line
