import subprocess
import sys

import pytest

from bsi_d2 import cli


def test_every_registered_command_has_its_module():
    for name, (module, _) in cli.COMMANDS.items():
        mod = __import__(module, fromlist=["main"])
        assert callable(mod.main) and callable(mod.add_arguments), name


def test_help_lists_commands(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_console_script_runs_subcommand_help():
    proc = subprocess.run(
        [sys.executable, "-m", "bsi_d2.cli", "convert", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "bsi-d2 convert" in proc.stdout


def test_unknown_command_fails():
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
