"""Freed memory kept for reuse during a fit (glibc): large blocks stop costing page faults, and
the memory goes back to the system after the fit. Each check runs in a fresh interpreter, so
glibc starts from its defaults and no other test's heap is in the way."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from medsamkit.training.memory import KeepFreedMemory

glibc = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                           reason="the settings are glibc's (Linux)")

_SCRIPT = """
import json, resource, sys, torch
from medsamkit.training.memory import KeepFreedMemory
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rss_mb = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
callback = KeepFreedMemory()
if sys.argv[1] == "kept":
    callback.setup(None, None, "fit")
for _ in range(3):  # the first rounds may grow the heap
    torch.ones(16 * 2**20)
before = faults()
for _ in range(4):  # a 64 MB tensor: above any of glibc's mmap thresholds
    t = torch.ones(16 * 2**20)
    del t
out = {"kept": callback.kept, "faults": faults() - before}
t = torch.ones(64 * 2**20)  # 256 MB
del t
out["rss_after_free"] = rss_mb()
callback.teardown(None, None, "fit")
out["rss_after_teardown"] = rss_mb()
print(json.dumps(out))
"""


def _run(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@glibc
def test_kept_memory_is_reused_without_page_faults_and_handed_back_after_the_fit():
    pages = 4 * 64 * 2**20 // 4096
    default, kept = _run("default"), _run("kept")
    assert not default["kept"] and kept["kept"]
    assert default["faults"] > pages * 3 // 4  # each 64 MB block mapped and zero-filled anew
    assert kept["faults"] < pages // 4  # reused: not one of the 4 rounds faults its pages in again
    assert kept["rss_after_free"] - kept["rss_after_teardown"] > 200  # the freed 256 MB were kept, then returned
    assert default["rss_after_free"] - default["rss_after_teardown"] < 50


def test_the_callback_acts_on_fit_only():
    callback = KeepFreedMemory()
    callback.setup(None, None, "validate")  # type: ignore[arg-type]
    callback.teardown(None, None, "validate")  # type: ignore[arg-type]
    assert not callback.kept


def test_the_trainer_has_the_callback_unless_switched_off(tmp_path):
    from medsamkit.training.config import load_config
    from medsamkit.training.fit import build_trainer

    for value, expected in (("true", 1), ("false", 0)):
        config = load_config([], ["--trainer.keep_freed_memory", value, "--output.tensorboard", "false",
                                  "--output.csv", "false", "--output.progress_bar", "false"])
        trainer = build_trainer(config, tmp_path, has_val=False)
        assert sum(isinstance(c, KeepFreedMemory) for c in trainer.callbacks) == expected
