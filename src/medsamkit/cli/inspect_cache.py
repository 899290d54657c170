"""``medsamkit inspect-cache``: summary and spot-check pictures of a preprocess cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError

HELP = "summarise a preprocess cache and draw a few samples (mask and box on the image)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect-cache", help=HELP, description=HELP + ". Writes one S x S PNG per "
                       "sample picked at random, and sheet.png with all of them.")
    p.add_argument("cache", metavar="CACHE", help="cache folder written by medsamkit preprocess")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the PNG files")
    p.add_argument("--n", type=int, default=8, help="how many samples to draw (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pick (default 0)")
    p.add_argument("--split", default=None, help="draw from this split only (train, val ...)")
    p.add_argument("--columns", type=int, default=4, help="tiles per row of sheet.png (default 4)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise InputError(None, f"--n {args.n}: draw at least one sample")
    from ..data.cache import PreprocessedCache
    from ..data.inspect import contact_sheet, pick_samples, sample_tile, summary_lines
    from ..io.writers import write_png

    cache = PreprocessedCache(args.cache)
    for line in summary_lines(cache.manifest):
        print(line)
    indices = cache.indices(args.split) if args.split else list(range(len(cache)))
    picked = [indices[i] for i in pick_samples(len(indices), args.n, args.seed)]
    if not picked:
        print("no samples to draw")
        return 0
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; give a folder for the pictures")
    tiles = []
    for index in picked:
        sample = cache[index]
        tile = sample_tile(sample)
        where = "" if sample.slice_index is None else f"_z{sample.slice_index:03d}"
        safe = sample.case_id.replace("/", "_")
        write_png(out / f"{index:06d}_{safe}{where}_label{sample.label}.png", tile)
        tiles.append(tile)
    write_png(out / "sheet.png", contact_sheet(tiles, args.columns))
    print(f"wrote {len(tiles)} sample pictures and sheet.png ({cache.input_size} px tiles) to {out}")
    return 0
