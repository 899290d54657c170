"""``medsamkit fit``: fine-tune a SAM-family model, or train a baseline, from layered YAML configs.

``medsamkit fit --config configs/litemedsam-decoder.yaml [--config more.yaml] [--trainer.max_epochs 3]``:
later files and the dotted ``--section.key VALUE`` overrides win; an unknown key is an error
that names it. See :mod:`medsamkit.training.config` for every key.
"""

from __future__ import annotations

import argparse

from ..errors import MedsamkitError

HELP = "fine-tune a model (or train a baseline) from YAML configs"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit", help=HELP, allow_abbrev=False,
        description=HELP + ". Configs are layered in order; --section.key VALUE overrides any key "
        "(e.g. --trainer.max_epochs 3 --data.cache runs/cache/kvasir-seg --model.mode lora).",
        epilog="Runs resume from OUTPUT_DIR/checkpoints/last.ckpt; the tuned model is exported to "
               "OUTPUT_DIR/model.pth (official layout, usable with --checkpoint) with model.pth.json.",
    )
    p.add_argument("--config", action="append", default=[], metavar="YAML", help="config file (repeat to layer)")
    p.add_argument("--print-config", action="store_true", help="print the merged configuration and exit")
    p.set_defaults(run=run, overrides=[])
    parse_known = p.parse_known_args

    def parse_with_overrides(args=None, namespace=None):  # the dotted keys are not argparse options
        ns, extras = parse_known(args, namespace)
        ns.overrides = list(extras)
        return ns, []

    p.parse_known_args = parse_with_overrides  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    try:
        import yaml

        from ..training.config import load_config
        from ..training.fit import fit
    except ModuleNotFoundError as exc:
        raise MedsamkitError(f"medsamkit fit needs the training extra ({exc.name} is missing): "
                             "pip install 'medsamkit[train]'") from None

    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0

    result = fit(config)
    if result.export_path is None:  # not the first process of a distributed run
        return 0
    dice = "n/a (no validation split)" if result.best_val_dice is None else f"{result.best_val_dice:.4f}"
    print(f"trained {result.epochs} epoch(s) in {result.seconds:.0f} s; best val Dice {dice}")
    print(f"checkpoints in {result.out_dir / 'checkpoints'}")
    print(f"exported {result.export_path} (use it with --checkpoint)")
    return 0
