"""``bsi-d2 store``: send the DICOM objects of ``--dicom-out`` (or any DICOM files) to a PACS.

C-ECHO first, then C-STORE over one association (``--host --port --aet``), or STOW-RS to a
DICOMweb server (``--stow URL``; the password is read from an environment variable, never from
the command line). Files are named by their path relative to the folder given; no patient
attribute is printed.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

HELP = "send DICOM results to a PACS (C-STORE or STOW-RS)"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bsi_d2.pacs.store import DEFAULT_CALLING_AET

    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="folders (searched recursively, e.g. predict's --dicom-out output) or files; "
        "only Part-10 DICOM files are sent",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--host", help="the PACS's host name or address (C-STORE)")
    target.add_argument(
        "--stow", metavar="URL", help="DICOMweb root for STOW-RS instead (POST URL/studies)"
    )
    parser.add_argument("--port", type=int, help="the PACS's DICOM port (with --host)")
    parser.add_argument("--aet", metavar="CALLED_AET", help="the PACS's AE title (with --host)")
    parser.add_argument(
        "--calling-aet",
        default=DEFAULT_CALLING_AET,
        help=f"this side's AE title, as the PACS knows it (default {DEFAULT_CALLING_AET})",
    )
    parser.add_argument("--user", help="DICOMweb user, HTTP basic authentication (with --stow)")
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the --user's password (never on the command line)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30, help="seconds per network step (default 30)"
    )


def main(args: argparse.Namespace) -> int:
    from bsi_d2.pacs.store import PeerError, find_dicom_files, relative_name, store_files, stow_rs

    problem = _argument_problem(args)
    if problem:
        logger.error("%s", problem)
        return 2
    try:
        files = find_dicom_files(args.inputs)
    except FileNotFoundError as err:
        logger.error("%s", err)
        return 2
    if not files:
        logger.error("no DICOM (Part-10) files under %s", ", ".join(map(str, args.inputs)))
        return 2
    if not logger.isEnabledFor(logging.DEBUG):  # our messages say it once, in words
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    try:
        if args.stow:
            peer = args.stow
            password = os.environ[args.password_env] if args.password_env else None
            results = stow_rs(files, args.stow, args.user, password, args.timeout)
        else:
            peer = f"{args.aet}@{args.host}:{args.port}"
            results = store_files(
                files, args.host, args.port, args.aet, args.calling_aet, args.timeout
            )
    except PeerError as err:
        logger.error("nothing stored: %s", err)
        return 2
    for result in results:
        name = relative_name(result.path, args.inputs)
        if not result.ok:
            logger.error("%s: not stored: %s", name, result.message)
        elif result.message:
            logger.warning("%s: stored, %s", name, result.message)
    stored = sum(result.ok for result in results)
    logger.info("%d of %d DICOM file(s) stored on %s", stored, len(results), peer)
    if stored == len(results):
        return 0
    return 1 if stored else 2


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of options, or None."""
    if args.host:
        missing = [option for option in ("port", "aet") if getattr(args, option) is None]
        if missing:
            return "--host needs " + " and ".join(f"--{option}" for option in missing)
        if args.user or args.password_env:
            return "--user and --password-env are for --stow (C-STORE has no password)"
        return None
    if args.user and not args.password_env:
        return "--user needs --password-env VAR, the environment variable with the password"
    if args.password_env and not args.user:
        return "--password-env needs --user"
    if args.password_env and args.password_env not in os.environ:
        return f"the environment variable {args.password_env} (--password-env) is not set"
    return None
