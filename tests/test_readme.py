"""The README's quick start stays true: exactly two commands, and CI runs the second one verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_quick_start_has_two_commands_and_ci_runs_the_test_command():
    commands = _quick_start_commands()
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1].strip() in [line.strip() for line in ci]


def test_quick_start_main_job_uses_only_existing_subcommands():
    from samdeploy.cli.main import COMMANDS

    used = re.findall(r"samdeploy (\w+)", _quick_start_commands()[0])
    assert used and all(u in COMMANDS for u in used)
