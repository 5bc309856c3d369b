import argparse
import subprocess
import sys
from pathlib import Path

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


# -- one spelling per option; the old ones still parse, with a warning -------------------------
# (command, new spelling, old spelling, what the warning names: the old and the new)
RENAMED = [
    ("predict", ["in", "--out", "o", "--config-file", "c.yaml"],
     ["in", "--out", "o", "--config", "c.yaml"], ("--config", "--config-file")),
    ("demo", ["--config-file", "c.yaml"], ["--config", "c.yaml"], ("--config", "--config-file")),
    ("phantom", ["--scans", "3", "--out", "o"], ["--n", "3", "--out", "o"], ("--n", "--scans")),
    ("convert", ["src", "--out", "o"], ["src", "o"], ("positional OUT", "--out")),
    ("convert", ["--out", "o", "src", "--folds", "2"], ["src", "o", "--folds", "2"],
     ("positional OUT", "--out")),
    ("preprocess", ["a", "b", "--out", "o"], ["a", "b", "o"], ("positional OUT", "--out")),
    ("preprocess", ["--out", "o", "a", "--no-progress"], ["a", "o", "--no-progress"],
     ("positional OUT", "--out")),
]  # fmt: skip


def parse(command: str, argv: list[str]) -> argparse.Namespace:
    _, parser = cli.command_parser(command)
    return parser.parse_args(argv)


def option(command: str, flag: str) -> argparse.Action:
    _, parser = cli.command_parser(command)
    (action,) = [a for a in parser._actions if flag in a.option_strings]
    return action


@pytest.mark.parametrize(("command", "new", "old", "named"), RENAMED)
def test_the_old_spelling_parses_as_the_new_one_and_warns(command, new, old, named, capsys):
    from_new = parse(command, new)
    assert capsys.readouterr().err == ""
    from_old = parse(command, old)
    warning = capsys.readouterr().err
    assert vars(from_old) == vars(from_new)
    old_name, new_name = named
    assert warning.startswith(f"bsi-d2 {command}: warning: ") and warning.count("\n") == 1
    assert f"{old_name} is deprecated, use {new_name}" in warning


@pytest.mark.parametrize(
    ("command", "argv", "expected"),
    [
        ("train", ["--config-file", "c.yaml", "OUTPUT_DIR", "x"], {"config_file": "c.yaml"}),
        ("kfold", ["--config-file", "c.yaml", "--folds", "3"], {"config_file": "c.yaml"}),
        ("predict", ["in", "--out", "o", "--config-file", "c.yaml"], {"out": Path("o")}),
        ("demo", ["--config-file", "c.yaml", "--out", "o"], {"out": Path("o")}),
        ("phantom", ["--scans", "3", "--out", "o"], {"scans": 3, "out": Path("o")}),
        ("convert", ["src", "--out", "o"], {"src": Path("src"), "out": Path("o")}),
        ("preprocess", ["a", "--out", "o"], {"inputs": ["a"], "out": Path("o")}),
        ("bsi", ["a.json", "--out", "o"], {"out": Path("o")}),
        (
            "evaluate",
            ["--gt", "g.json", "--predictions", "p.json", "--out", "o"],
            {"out": Path("o")},
        ),
    ],
)
def test_every_command_takes_the_new_spelling(command, argv, expected, capsys):
    args = parse(command, argv)
    assert capsys.readouterr().err == ""
    assert {key: getattr(args, key) for key in expected} == expected
    assert not hasattr(args, "legacy_out")


def test_config_file_defaults_to_empty_as_detectron2_expects():
    for command, argv in (
        ("train", []),
        ("kfold", []),
        ("demo", []),
        ("predict", ["in", "--out", "o"]),
    ):
        assert parse(command, argv).config_file == ""


@pytest.mark.parametrize(
    ("command", "argv", "message"),
    [
        ("convert", ["src", "o", "--out", "p"], "output folder given twice"),
        ("convert", ["src"], "required: --out"),
        ("preprocess", ["a"], "required: --out"),
    ],
)
def test_the_output_folder_is_given_exactly_once(command, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse(command, argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_with_out_every_positional_of_preprocess_is_an_input(capsys):
    assert parse("preprocess", ["a", "b", "c", "--out", "o"]).inputs == ["a", "b", "c"]
    assert capsys.readouterr().err == ""


# every command that has the option: one dest, default and help text
SHARED = {
    "--config-file": ["train", "kfold"],
    "--taxonomy": ["bsi", "evaluate", "convert"],
    "--salt": ["predict", "bsi", "preprocess"],
    "--keep-dates": ["predict", "bsi", "preprocess"],
    "--no-progress": ["predict", "bsi", "preprocess"],
    "--no-recursive": ["predict", "preprocess"],
    "--cut-below-knee": ["predict", "preprocess"],
    "--workers": ["convert", "phantom", "demo"],
}


@pytest.mark.parametrize("flag", SHARED)
def test_a_shared_option_is_defined_once(flag):
    actions = [option(command, flag) for command in SHARED[flag]]
    assert len({(a.dest, a.default, a.help, type(a)) for a in actions}) == 1


def test_no_progress_and_no_recursive_are_positive_dests():
    for command in SHARED["--no-progress"]:
        assert parse(command, ["in", "--out", "o", "--no-progress"]).progress is False
    for command in SHARED["--no-recursive"]:
        args = parse(command, ["in", "--out", "o"])
        assert args.recursive is True and args.progress is True


@pytest.mark.parametrize(
    ("command", "new", "old"),
    [
        ("predict", "--config-file", "--config"),
        ("demo", "--config-file", "--config"),
        ("phantom", "--scans", "--n"),
        ("convert", "--out", "positional OUT"),
        ("preprocess", "--out", "positionals is OUT"),
    ],
)
def test_help_documents_the_new_spelling_and_names_the_old(command, new, old, capsys):
    with pytest.raises(SystemExit):
        parse(command, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    usage, options = text.split("options:")
    assert f"[{new} " in usage and f"[{old} " not in usage  # the old spelling is hidden there
    assert old in options and "deprecated" in options


def test_a_deprecated_alias_keeps_the_action_of_the_new_option(capsys):
    from bsi_d2.commands._args import CommandParser, add_deprecated_alias

    parser = CommandParser(prog="p")
    add_deprecated_alias(parser, "--old-list", parser.add_argument("--item", action="append"))
    bar = parser.add_argument("--no-bar", dest="bar", action="store_false")
    add_deprecated_alias(parser, "--quiet", bar)
    args = parser.parse_args(["--item", "a", "--old-list", "b", "--quiet"])
    assert args.item == ["a", "b"] and args.bar is False
    assert capsys.readouterr().err.splitlines() == [
        "p: warning: --old-list is deprecated, use --item",
        "p: warning: --quiet is deprecated, use --no-bar",
    ]


def test_the_old_spelling_runs_the_command(tmp_path, capsys):
    (tmp_path / "src").mkdir()  # no Labelme file: convert exits 2, nothing written
    assert cli.main(["convert", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    assert "positional OUT is deprecated, use --out OUT" in capsys.readouterr().err


def test_config_errors_are_one_line_and_other_errors_keep_their_traceback(
    tmp_path, caplog, monkeypatch, configs_dir
):
    import bsi_d2.commands.predict as predict

    argv = ["predict", str(tmp_path), "--out", str(tmp_path / "out"), "--config-file"]
    argv += [str(configs_dir / "mask_rcnn_R_18_FPN_cpu_bsi.yaml"), "--opts", "MODEL.NO_SUCH", "1"]
    assert cli.main(argv) == 2
    assert "config overrides: Non-existent key: MODEL.NO_SUCH" in caplog.text

    def broken(args):
        raise RuntimeError("a defect, not a config problem")

    monkeypatch.setattr(predict, "main", broken)
    with pytest.raises(RuntimeError, match="a defect"):
        cli.main(argv)
