"""``bsi-d2 store``: send the DICOM objects of ``--dicom-out`` (or any DICOM files) to a PACS.

C-ECHO first, then C-STORE over one association (``--host --port --aet``), or STOW-RS to a
DICOMweb server (``--stow URL``; the password is read from an environment variable, never from
the command line).
"""

from __future__ import annotations

import argparse
import logging
import os

HELP = "send DICOM results to a PACS (C-STORE or STOW-RS)"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="folders (e.g. predict's output) or files")
    parser.add_argument("--host", help="the PACS's host (C-STORE)")
    parser.add_argument("--port", type=int, help="the PACS's DICOM port")
    parser.add_argument("--aet", help="the PACS's AE title (called AE title)")
    parser.add_argument("--calling-aet", default="BSI_D2", help="this side's AE title")
    parser.add_argument("--stow", metavar="URL", help="DICOMweb root for STOW-RS instead")
    parser.add_argument("--user", help="DICOMweb user (HTTP basic)")
    parser.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the password"
    )
    parser.add_argument("--timeout", type=float, default=30, help="seconds per network step")


def main(args: argparse.Namespace) -> int:
    from bsi_d2.pacs.store import PeerError, find_dicom_files, store_files, stow_rs

    files = find_dicom_files(args.inputs)
    if not files:
        logger.error("no DICOM files under %s", ", ".join(map(str, args.inputs)))
        return 2
    try:
        if args.stow:
            password = os.environ.get(args.password_env) if args.password_env else None
            results = stow_rs(files, args.stow, args.user, password, args.timeout)
        elif args.host and args.port and args.aet:
            results = store_files(files, args.host, args.port, args.aet, args.calling_aet,
                                  args.timeout)  # fmt: skip
        else:
            logger.error("give --host, --port and --aet (C-STORE) or --stow URL (STOW-RS)")
            return 2
    except PeerError as err:
        logger.error("%s", err)
        return 2
    failed = [r for r in results if not r.ok]
    for result in failed:
        logger.error("%s: not stored: %s", result.path, result.message)
    logger.info("%d of %d files stored", len(results) - len(failed), len(results))
    return 1 if failed else 0
