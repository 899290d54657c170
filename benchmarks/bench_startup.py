"""Start-up time of the command line: ``medsamkit --help``, each verb's ``--help``, a usage error.

Each command is a whole new process (``python -m medsamkit.cli.main ...``, as the console script
runs it), timed wall-clock; the table shows the median of ``--runs`` runs and whether torch got
imported. ``--against SRC`` also times another checkout's ``src`` folder (e.g. an older commit's,
``git worktree add /tmp/old <commit>``) in the same run, alternating, for a before/after table.

    python benchmarks/bench_startup.py --runs 7 [--against /tmp/old/src]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = [
    ["--help"],
    ["segment", "--help"],
    ["fit", "--help"],
    ["evaluate", "--help"],
    ["segment", "x.png", "-o", "y.png", "--model", "no-such-model"],  # a usage error
]
PROBE = ("import runpy, sys; sys.argv = ['medsamkit', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('medsamkit.cli.main', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "sys.stderr.write('\\nTORCH=%s' % ('torch' in sys.modules))")


def time_once(src: Path, argv: list[str]) -> tuple[float, bool]:
    env = dict(os.environ, PYTHONPATH=str(src))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, encoding="utf-8",
                          env=env, timeout=120)
    seconds = time.perf_counter() - start
    return seconds, "TORCH=True" in proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--against", type=Path, default=None, help="another checkout's src folder to time too")
    args = parser.parse_args()
    sources = {"this checkout": SRC} | ({"--against": args.against} if args.against else {})
    times: dict[tuple[str, int], list[float]] = {}
    torch_seen: dict[tuple[str, int], bool] = {}
    print(f"load average before: {os.getloadavg()}", flush=True)
    for _ in range(args.runs):
        for i, argv in enumerate(COMMANDS):
            for name, src in sources.items():  # alternating: both see the same machine load
                seconds, imported = time_once(src, argv)
                times.setdefault((name, i), []).append(seconds)
                torch_seen[(name, i)] = imported
    print(f"load average after: {os.getloadavg()}")
    header = "| command | " + " | ".join(f"{n}: median s (torch imported)" for n in sources) + " |"
    print(header)
    print("|" + "---|" * (len(sources) + 1))
    for i, argv in enumerate(COMMANDS):
        cells = [f"{statistics.median(times[(n, i)]):.3f} ({'yes' if torch_seen[(n, i)] else 'no'})" for n in sources]
        print(f"| medsamkit {' '.join(argv)} | " + " | ".join(cells) + " |")
    print(f"(median of {args.runs} runs; python -c 'import torch' for scale: "
          f"{statistics.median(time_probe_torch() for _ in range(3)):.3f} s)")


def time_probe_torch() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
