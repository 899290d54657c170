"""``medsamkit compare``: several evaluation reports side by side (table, box plots, grid)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import RANKS
from ..errors import InputError

HELP = "compare evaluation reports: markdown table, box plots and a side-by-side grid of cases"
TABLE_NAME, GRID_NAME = "comparison.md", "grid.png"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help=HELP,
        description=HELP + f". Writes {TABLE_NAME}, boxplot_dsc/nsd/hd95.png and {GRID_NAME} "
        "(image | ground truth | each model, ground truth outlined in white) into the output folder. "
        "Image, ground-truth and prediction folders default to those the reports recorded.")
    p.add_argument("reports", nargs="+", metavar="REPORT_DIR", help="folders written by medsamkit evaluate")
    p.add_argument("--names", metavar="A,B,...", help="model names, one per report (default: folder names)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--images", metavar="DIR", help="image folder for the grid (default: recorded by evaluate --images)")
    p.add_argument("--gt", metavar="DIR", help="ground-truth folder (default: the first report's)")
    p.add_argument("--pred-dirs", metavar="DIR_A,DIR_B,...", help="prediction folders, one per report")
    p.add_argument("--cases", metavar="ID,...", help="cases to show in the grid (default: chosen by --rank)")
    p.add_argument("--n", type=int, default=3, help="cases in the grid when not chosen (default 3: best, median, worst)")
    p.add_argument("--rank", choices=RANKS, default="first",
                   help="first: by the first model's DSC; spread: by the DSC spread between models")
    p.add_argument("--panel", type=int, default=256, metavar="PX", help="panel size in the grid (default 256)")
    p.add_argument("--no-grid", action="store_true", help="only the table and the box plots")
    p.set_defaults(run=run)


def _split(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise InputError(None, f"--n {args.n}: show at least one case")
    if not 32 <= args.panel <= 2048:
        raise InputError(None, f"--panel {args.panel}: give 32 to 2048 pixels")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; compare needs an output folder")
    from ..evaluation.compare import (choose_cases, comparison_table, grid_sources, load_models, write_box_plots,
                                      write_grid)
    from ..evaluation.report import write_text

    models = load_models(args.reports, _split(args.names), _split(args.pred_dirs))
    table = comparison_table(models)
    write_text(out / TABLE_NAME, table)
    plots = write_box_plots(models, out)
    print(table, end="")
    print(f"wrote {out}/: " + ", ".join([TABLE_NAME, *(p.name for p in plots)]))
    if not args.no_grid:
        sources = grid_sources(models, args.images, args.gt)
        cases = choose_cases(models, args.n, args.rank, _split(args.cases))
        height, width = write_grid(models, cases, sources, out / GRID_NAME, args.panel)
        print(f"wrote {out / GRID_NAME} ({width} x {height} px): " + ", ".join(f"{c} ({why})" for c, why in cases))
    return 0
