"""``medsamkit models``: the registry, where each model's weights are and whether they are present."""

from __future__ import annotations

import argparse

HELP = "list the available models and where their weights are"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help=HELP, description=HELP)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models.registry import DEFAULT_MODEL, MODELS
    from ..models.zoo import WEIGHTS, cache_dir, locate

    print(f"weights cache: {cache_dir()} (set MEDSAMKIT_CACHE to move it)")
    for name, spec in MODELS.items():
        source = WEIGHTS[spec.weights]
        path = locate(spec.weights)
        if path is not None:
            status = f"present: {path}"
        elif source.urls:
            status = f"not downloaded yet: fetched on first use from {source.urls[0]}"
        else:
            status = f"missing: {source.install_hint or 'pass --checkpoint PATH'}"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}\n    {spec.description}\n    file {source.filename}: {status}")
    return 0
