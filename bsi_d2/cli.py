"""The ``bsi-d2`` command line: one entry, one module per sub-command.

Each module in ``bsi_d2.commands`` exposes ``HELP``, ``add_arguments(parser)`` (a
:class:`~bsi_d2.commands._args.CommandParser`) and ``main(args) -> int``; the logic itself lives
in the package, behind a typed function. Options shared by commands, and the deprecated
spellings they replaced, are defined once in ``bsi_d2.commands._args``.
Modules are imported only when their command runs, so ``bsi-d2 --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from bsi_d2.commands._args import CommandParser

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("bsi_d2.commands.demo", "synthetic scans -> COCO -> training -> inference -> report"),
    "phantom": ("bsi_d2.commands.phantom", "synthetic whole-body bone scans with ground truth"),
    "preprocess": ("bsi_d2.commands.preprocess", "DICOM/images -> merged 950 x 512 scans"),
    "convert": ("bsi_d2.commands.convert", "Labelme JSON folder -> COCO instances per split"),
    "train": ("bsi_d2.commands.train", "train Mask R-CNN (detectron2 or torchvision engine)"),
    "kfold": ("bsi_d2.commands.kfold", "run every fold of a k-fold split and summarise"),
    "pseudo-label": ("bsi_d2.commands.pseudo_label", "trusted predictions -> pseudo-labels"),
    "self-train": ("bsi_d2.commands.self_train", "rounds of train -> pseudo-label -> retrain"),
    "evaluate": (
        "bsi_d2.commands.evaluate",
        "score predictions against COCO ground truth or a reference CSV",
    ),
    "predict": ("bsi_d2.commands.predict", "batch inference, BSI per scan and reports"),
    "mine-negatives": ("bsi_d2.commands.mine_negatives", "normal scans -> hard negatives (COCO)"),
    "rank-unlabelled": ("bsi_d2.commands.rank_unlabelled", "which scan to annotate next"),
    "bsi": ("bsi_d2.commands.bsi", "BSI and reports from Labelme or COCO annotations"),
    "followup": ("bsi_d2.commands.followup", "changes across a patient's studies (BSI, lesions)"),
    "serve": (
        "bsi_d2.commands.serve",
        "a web page: log in, upload a scan, get its segmentation and BSI",
    ),
    "store": ("bsi_d2.commands.store", "send DICOM results to a PACS (C-STORE or STOW-RS)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bsi-d2",
        description="Bone-scan instance segmentation and Bone Scan Index. "
        "An aid for physicians, not a diagnosis.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(command: str) -> tuple[ModuleType, CommandParser]:
    """The module of ``command`` and the parser of its arguments."""
    module_name, help_text = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = CommandParser(prog=f"bsi-d2 {command}", description=help_text)
    module.add_arguments(parser)
    return module, parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known, rest = parser.parse_known_args(argv)
    if known.command is None:
        parser.print_help()
        return 2
    module, sub = command_parser(known.command)
    args = sub.parse_args(rest)
    logging.basicConfig(
        level=logging.DEBUG if known.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from bsi_d2.commands._args import config_errors

    try:
        return int(module.main(args) or 0)
    except config_errors() as err:  # a bad config, checkpoint, taxonomy or data set
        logging.getLogger("bsi_d2").error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
