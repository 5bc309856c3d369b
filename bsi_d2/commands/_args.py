"""Options that several commands share, spelled and documented once, and the deprecated spellings
they replaced (accepted for one release, each use warned about on stderr).

One spelling per option across ``bsi-d2``: ``--config-file FILE`` wherever a config is read
(detectron2's ``train_net.py`` spelling), ``--out OUT`` for every output folder, ``--scans N`` for
a count of scans, ``--no-progress`` and ``--no-recursive`` as ``progress`` and ``recursive``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

AfterParse = Callable[[argparse.ArgumentParser, argparse.Namespace], None]


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that runs, once every argument is parsed, the checks that need them
    all at once (an output folder given by ``--out`` or by a deprecated positional)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_parse: list[AfterParse] = []

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        for check in self.after_parse:
            check(self, namespace)
        return namespace, extras


def warn_deprecated(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """One line on stderr: ``old`` still works in this release, ``new`` is the spelling to use."""
    print(f"{parser.prog}: warning: {old} is deprecated, use {new}", file=sys.stderr)


class _DeprecatedAlias(argparse.Action):
    """An old option string of ``target``: the same value, with a warning naming the new one."""

    def __init__(self, option_strings: Sequence[str], dest: str, target: argparse.Action) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=target.nargs,
            const=target.const,
            default=argparse.SUPPRESS,
            type=target.type,
            choices=target.choices,
            help=argparse.SUPPRESS,
            metavar=target.metavar,
        )
        self.target = target

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        new = self.target.option_strings[0]
        warn_deprecated(parser, str(option_string), new)
        self.target(parser, namespace, values, new)


def add_deprecated_alias(
    parser: argparse.ArgumentParser, old: str, target: argparse.Action
) -> None:
    """Accept ``old`` as a hidden spelling of the option ``target`` (what ``add_argument``
    returned) for one release; ``--help`` names it in the help of ``target``. ``target`` must
    not be required: argparse would not count the alias as having given it."""
    parser.add_argument(old, dest=target.dest, action=_DeprecatedAlias, target=target)
    target.help = f"{target.help or ''} ({old}: deprecated spelling)".lstrip()


def add_config_file_argument(
    parser: argparse.ArgumentParser, help: str, *, deprecated: Sequence[str] = ()
) -> argparse.Action:
    """``--config-file FILE`` (dest ``config_file``, default ``""`` as detectron2's
    ``default_setup`` expects; callers read ``args.config_file or None``)."""
    action = parser.add_argument("--config-file", default="", metavar="FILE", help=help)
    for old in deprecated:
        add_deprecated_alias(parser, old, action)
    return action


def add_out_argument(
    parser: argparse.ArgumentParser,
    help: str,
    *,
    deprecated_positional: str | None = None,
    **kwargs: Any,
) -> None:
    """``--out OUT``, the output folder (a :class:`~pathlib.Path`; required unless ``default`` is
    given).

    ``deprecated_positional`` also accepts the old positional OUT for one release, which needs a
    :class:`CommandParser`: ``"own"`` for a positional of its own after the others (``convert
    SRC OUT``), or the dest of an ``nargs="+"`` positional whose last value was OUT
    (``preprocess IN... OUT``: without ``--out``, the last of two or more is taken as OUT).
    """
    if deprecated_positional is None:
        kwargs.setdefault("required", "default" not in kwargs)
        parser.add_argument("--out", type=Path, metavar="OUT", help=help, **kwargs)
        return
    if not isinstance(parser, CommandParser):
        raise TypeError("a deprecated positional OUT needs a CommandParser (bsi_d2.cli makes one)")
    if deprecated_positional == "own":
        help += "; required (the old positional OUT still works, deprecated)"
        parser.add_argument(
            "legacy_out", nargs="?", type=Path, default=None, help=argparse.SUPPRESS
        )
    else:
        help += "; required (deprecated: without it, the last of two or more positionals is OUT)"
    parser.add_argument("--out", type=Path, default=None, metavar="OUT", help=help)
    parser.after_parse.append(_LegacyOut(deprecated_positional))


class _LegacyOut:
    """After parsing: ``args.out`` from ``--out`` or, with a warning, from the old positional."""

    def __init__(self, positional: str) -> None:
        self.positional = positional

    def __call__(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if self.positional == "own":
            legacy = args.legacy_out
            del args.legacy_out
            if legacy is not None and args.out is not None:
                parser.error(f"output folder given twice: --out {args.out} and {legacy}")
        else:
            values = getattr(args, self.positional)
            legacy = Path(values.pop()) if args.out is None and len(values) > 1 else None
        if legacy is not None:
            warn_deprecated(parser, "the positional OUT", "--out OUT")
            args.out = legacy
        if args.out is None:
            parser.error("the following arguments are required: --out")


def add_taxonomy_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--taxonomy",
        default=None,
        metavar="FILE",
        help="taxonomy YAML/JSON or Labelme labels.txt (default: built-in)",
    )


def add_salt_argument(parser: argparse.ArgumentParser) -> None:
    from bsi_d2.io.pseudonym import DEFAULT_SALT, SALT_ENV

    parser.add_argument(
        "--salt",
        default=None,
        help=f"salt of the pseudonymous study keys and file names (default: ${SALT_ENV}, "
        f"else the public {DEFAULT_SALT!r})",
    )


def add_keep_dates_argument(parser: argparse.ArgumentParser) -> None:
    from bsi_d2.io.pseudonym import DATE_MODES, DATE_SHIFT_DAYS

    parser.add_argument(
        "--keep-dates",
        choices=DATE_MODES,
        default=None,
        help="keep each study's date (DICOM StudyDate, else SeriesDate or AcquisitionDate) as "
        "study_date: month keeps its year and month (2024-03); shift moves every date of a "
        f"patient back by the same salted 1-{DATE_SHIFT_DAYS} days (keyed by the salt and the "
        "patient), so order and intervals between a patient's studies stay true but not the "
        "day. Default: no date is kept (with --keep-identity: the exact date)",
    )


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )


def add_recursive_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="do not descend into sub-folders of the inputs",
    )


def add_cut_below_knee_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cut-below-knee",
        action="store_true",
        help="blank the rows below the knees (row 640 on, of 950)",
    )


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: CPU count; 1 = no pool)",
    )


def config_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean a bad config, checkpoint, taxonomy or data set: reported in a line,
    exit code 2 (by :func:`bsi_d2.cli.main` for every command). Anything else is a defect and
    keeps its traceback."""
    from bsi_d2.config import ConfigError
    from bsi_d2.data.datasets import DatasetError
    from bsi_d2.engine.checkpoint import CheckpointError
    from bsi_d2.taxonomy import TaxonomyError

    return (ConfigError, CheckpointError, TaxonomyError, DatasetError, FileNotFoundError)


def add_difficulty_argument(parser: argparse.ArgumentParser, default: str = "standard") -> None:
    from bsi_d2.phantom.presets import DIFFICULTIES

    parser.add_argument(
        "--difficulty",
        choices=DIFFICULTIES,
        default=default,
        help="phantom preset: standard (the light set the demo trains on by default) or hard "
        "(the clinical disease range, look-alikes, real count levels: the benchmark)",
    )


def add_threshold_choice_arguments(parser: argparse.ArgumentParser) -> None:
    """``--target-precision`` and ``--match-iou``: how thresholds are chosen on validation
    (``pseudo-label`` and ``self-train``)."""
    from bsi_d2.inference.pseudo import DEFAULT_MATCH_IOU, DEFAULT_TARGET_PRECISION

    parser.add_argument(
        "--target-precision",
        type=float,
        default=DEFAULT_TARGET_PRECISION,
        help="per class, the lowest threshold whose validation precision reaches this "
        f"(default {DEFAULT_TARGET_PRECISION})",
    )
    parser.add_argument(
        "--match-iou",
        type=float,
        default=DEFAULT_MATCH_IOU,
        help=f"mask IoU at which a validation prediction is right (default {DEFAULT_MATCH_IOU})",
    )


def add_opts_argument(parser: argparse.ArgumentParser) -> None:
    """``--opts KEY VALUE ...``: config overrides, the rest of the line."""
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="KEY VALUE config overrides; give it last, it takes the rest of the line",
    )


def add_score_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    """``--score-thresh`` and ``--class-thresh CLASS=T``: the score thresholds of what a model
    returns (defaults from ``BSI.SCORE_THRESH`` and ``BSI.CLASS_SCORE_THRESH``)."""
    parser.add_argument(
        "--score-thresh", type=float, help="score threshold, all classes (default BSI.SCORE_THRESH)"
    )
    parser.add_argument(
        "--class-thresh",
        action="append",
        default=[],
        metavar="CLASS=T",
        help="per-class threshold, repeatable (default BSI.CLASS_SCORE_THRESH)",
    )
