"""How long the ``fatvit`` command takes to answer before it does any work: help texts and argument errors.

Each command runs in a fresh interpreter, interleaved with two peers measured in
the same rounds: ``python -c pass`` (the interpreter's own start) and ``python -c
"import torch"`` (what a command that loads torch pays at least). The table gives
the median wall time and its ratio to ``import torch``; ``--json`` prints the
records. Run it with nothing else running::

    python benchmarks/cli_startup.py --rounds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence

#: The commands timed: each a list of arguments after ``python``.
COMMANDS: Dict[str, List[str]] = {
    "python -c pass": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "fatvit --help": ["-m", "fatvit", "--help"],
    "fatvit trian (unknown verb)": ["-m", "fatvit", "trian"],
    "fatvit train --help": ["-m", "fatvit", "train", "--help"],
    "fatvit train --epochs x": ["-m", "fatvit", "train", "--epochs", "x"],
    "fatvit eval --help": ["-m", "fatvit", "eval", "--help"],
    "fatvit predict --bogus": ["-m", "fatvit", "predict", "--bogus"],
    "fatvit detect --help": ["-m", "fatvit", "detect", "--help"],
    "fatvit detect train --img-size 3": ["-m", "fatvit", "detect", "train", "--img-size", "3"],
    "fatvit segment eval --help": ["-m", "fatvit", "segment", "eval", "--help"],
    "fatvit export --help": ["-m", "fatvit", "export", "--help"],
    "fatvit benchmark --modes x": ["-m", "fatvit", "benchmark", "--modes", "x"],
    "fatvit summary --help": ["-m", "fatvit", "summary", "--help"],
    "fatvit table --help": ["-m", "fatvit", "table", "--help"],
}

BASELINE = "import torch"


def time_commands(commands: Dict[str, Sequence[str]], rounds: int) -> List[Dict[str, object]]:
    """Median and quartile wall seconds of each command over ``rounds`` interleaved rounds (after one untimed
    round that warms the file cache), with its ratio to :data:`BASELINE`'s median."""
    times: Dict[str, List[float]] = {name: [] for name in commands}
    for round_ in range(rounds + 1):
        for name, args in commands.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, check=False)
            if round_:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians.get(BASELINE)
    records = []
    for name, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) > 1 else [t[0]] * 3
        records.append(dict(command=name, median_s=medians[name], p25_s=q[0], p75_s=q[2],
                            ratio_to_import_torch=medians[name] / base if base else None))  # fmt: skip
    return records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (default: 10)")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    args = parser.parse_args(argv)
    records = time_commands(COMMANDS, max(1, args.rounds))
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    width = max(len(r["command"]) for r in records)
    print(f"{'command':<{width}}  median s  ratio to import torch")
    for r in records:
        print(f"{r['command']:<{width}}  {r['median_s']:8.3f}  {r['ratio_to_import_torch']:21.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
