"""The CLI starts without torch: ``--help``, each verb's ``--help``, usage errors and wrong paths.

Each check runs in a fresh interpreter (a subprocess), so modules imported by other tests do not
hide a heavy import. Every module of ``medsamkit.cli`` is imported, so a new verb that imports a
heavy library at module level fails here; option choices belong in :mod:`medsamkit.choices`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

#: libraries that make start-up slow; none may be imported before a verb runs its job
HEAVY = ("torch", "numpy", "scipy", "cv2", "PIL", "SimpleITK", "pydicom", "tqdm", "onnxruntime", "openvino",
         "nncf", "matplotlib", "lightning", "transformers")

SCRIPT = textwrap.dedent("""
    import contextlib, importlib, io, json, pkgutil, sys
    import medsamkit.cli
    from medsamkit.cli.main import build_parser, main

    HEAVY = {heavy!r}
    def heavy():
        return sorted(m for m in HEAVY if m in sys.modules)

    report = {{}}
    for info in pkgutil.iter_modules(medsamkit.cli.__path__):
        importlib.import_module("medsamkit.cli." + info.name)
    report["import every cli module"] = [0, heavy()]
    verbs = list(build_parser()._subparsers._group_actions[0].choices)
    report["verbs"] = verbs
    for argv in {argvs!r} + [[verb, "--help"] for verb in verbs]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
        report[" ".join(argv)] = [code, heavy(), err.getvalue()]
    print(json.dumps(report))
""")

ARGVS = [
    ["--help"],
    ["--version"],
    [],
    ["segment"],  # missing required arguments
    ["segment", "x.png", "-o", "y.png", "--model", "no-such-model"],
    ["segment", "x.png", "-o", "y.png", "--backend", "no-such-backend"],
    ["segment", "x.png", "-o", "y.png", "--threads", "two"],
    ["evaluate", "--pred", "p"],
    ["preprocess", "d", "-o", "c", "--layout", "nope"],
    ["compare", "r", "-o", "o", "--rank", "nope"],
    ["nosuchverb"],
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    argvs = ARGVS + [
        # a wrong path fails at once, before torch is imported or a model is loaded
        ["segment", str(tmp_path_factory.mktemp("cli") / "missing.png"), "--box", "1,1,5,5", "-o", "m.png"],
    ]
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(heavy=HEAVY, argvs=argvs)], capture_output=True,
                          text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_importing_every_cli_module_imports_nothing_heavy(report):
    assert report["import every cli module"][1] == []


def test_help_of_the_command_and_of_every_verb_imports_nothing_heavy(report):
    assert {"segment", "models", "demo", "preprocess", "fit", "evaluate", "compare"} <= set(report["verbs"])
    for verb in [None, *report["verbs"]]:
        code, heavy, _ = report["--help" if verb is None else f"{verb} --help"]
        assert code == 0, verb
        assert heavy == [], (verb, heavy)


@pytest.mark.parametrize("argv", ARGVS[1:], ids=lambda a: " ".join(a) or "no verb")
def test_usage_errors_import_nothing_heavy(report, argv):
    code, heavy, err = report[" ".join(argv)]
    assert heavy == []
    if argv[:1] in (["--version"],):
        assert code == 0
    else:
        assert code == 2, err


def test_a_missing_input_fails_before_torch_is_imported(report):
    (key,) = [k for k in report if k.startswith("segment ") and "missing.png" in k]
    code, heavy, err = report[key]
    assert code == 2
    assert heavy == []
    assert "missing.png: no such file or folder" in err
