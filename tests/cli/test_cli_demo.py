"""`medsamkit demo`'s output folder stays out of git (the README's main job runs it in the checkout).
The demo itself runs with the real weights in test_cli_segment.py."""

from pathlib import Path

import pytest

from medsamkit.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_output_folder_is_git_ignored():
    gitignore = ROOT / ".gitignore"
    if not gitignore.is_file():
        pytest.skip("not a source checkout (no .gitignore)")
    args = build_parser().parse_args(["demo"])
    default = Path(args.output_dir)
    assert default == Path("medsamkit-demo")
    assert f"/{default}/" in gitignore.read_text(encoding="utf-8").splitlines()
