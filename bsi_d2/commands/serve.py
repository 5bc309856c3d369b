"""``bsi-d2 serve``: a web page where physicians log in, upload a scan, adjust it, run the
segmentation and read its BSI (:mod:`bsi_d2.web`); ``--add-user NAME`` adds an account."""

from __future__ import annotations

import argparse
import getpass
import logging
from pathlib import Path

from bsi_d2.commands._args import add_config_file_argument, add_opts_argument, add_salt_argument
from bsi_d2.io.limits import add_limit_arguments

HELP = "a web page: log in, upload a scan, get its segmentation and BSI"
DEFAULT_WORK = Path("bsi-d2-web")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_file_argument(
        parser, "model config YAML (the one it was trained with)", deprecated=["--config"]
    )
    parser.add_argument("--weights", metavar="FILE", help="model weights (default: the config's)")
    parser.add_argument(
        "--replay",
        metavar="FILE",
        help="answer from a recording (predict --record) instead of a model, for tests and demos",
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: MODEL.DEVICE)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        metavar="DIR",
        help=f"work area: uploads and results, per user (default ./{DEFAULT_WORK})",
    )
    parser.add_argument(
        "--users",
        type=Path,
        metavar="FILE",
        help="accounts file (TOML, argon2 hashes; default WORK/users.toml)",
    )
    parser.add_argument(
        "--add-user",
        metavar="NAME",
        help="add an account (or set its password), asking for the password, and exit",
    )
    parser.add_argument("--admin", action="store_true", help="with --add-user: sees every job")
    parser.add_argument(
        "--keep-identity",
        action="store_true",
        help="show upload file names and the DICOM's patient fields in the pages (default: "
        "pseudonyms only)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="job threads (default 1; the model runs one scan at a time whatever N)",
    )
    parser.add_argument(
        "--login-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds each failed login waits (1)",
    )
    add_salt_argument(parser)
    add_limit_arguments(parser)
    add_opts_argument(parser)


def users_file(args: argparse.Namespace) -> Path:
    return args.users or args.work / "users.toml"


def add_user_interactively(path: Path, name: str, admin: bool) -> int:
    """Ask for the password twice (getpass) and write the account."""
    from bsi_d2.web import WebDependencyError
    from bsi_d2.web.users import add_user, check_password, check_user_name

    try:
        check_user_name(name)
        password = getpass.getpass(f"password for {name}: ")
        check_password(password)
        if getpass.getpass("again: ") != password:
            logger.error("the passwords differ; nothing written")
            return 2
        created = add_user(path, name, password, admin)
    except (ValueError, WebDependencyError) as error:
        logger.error("%s", error)
        return 2
    role = "admin" if admin else "user"
    logger.info("%s %s (%s) in %s", "added" if created else "updated", name, role, path)
    return 0


def build_settings(args: argparse.Namespace):
    """The server's settings: the model (or recording) loaded once, batch options from the
    config as ``predict`` builds them, limits from the config and the command line."""
    from bsi_d2.commands.predict import load_predictor, options_from_config
    from bsi_d2.config import setup_cfg
    from bsi_d2.web.app import WebSettings
    from bsi_d2.web.jobs import RunSettings

    cfg = setup_cfg(args.config_file or None, args.opts)
    predictor, engine = load_predictor(args, cfg)
    options = options_from_config(cfg, args, engine)
    limits = options.limits
    weights = options.model["weights"]
    label = ", ".join(
        str(v)
        for v in (
            engine,
            args.config_file and Path(args.config_file).name,
            weights and Path(weights).name,
        )
        if v
    )
    return WebSettings(
        work_dir=args.work,
        users_file=users_file(args),
        run=RunSettings(predictor, predictor.taxonomy, options),
        limits=limits,
        keep_identity=args.keep_identity,
        salt=args.salt,
        workers=max(1, args.workers),
        login_delay=max(0.0, args.login_delay),
        model_label=label,
    )


def main(args: argparse.Namespace) -> int:
    from bsi_d2.web import WebDependencyError, require

    path = users_file(args)
    if args.add_user:
        return add_user_interactively(path, args.add_user, args.admin)
    try:
        uvicorn = require("uvicorn")
        from bsi_d2.web.app import create_app
        from bsi_d2.web.users import read_users

        if not read_users(path):
            logger.error(
                "no account in %s: add one first: bsi-d2 serve --add-user NAME "
                "[--admin] --users %s",
                path,
                path,
            )
            return 2
        app = create_app(build_settings(args))
    except (WebDependencyError, ValueError) as error:
        logger.error("%s", error)
        return 2
    if args.host not in LOCAL_HOSTS:
        logger.warning(
            "listening on %s: anyone who can reach it can try to log in; serve on 127.0.0.1 "
            "behind an HTTPS reverse proxy instead (docs/web.md)",
            args.host,
        )
    logger.info("bsi-d2 serve on http://%s:%d (work area %s)", args.host, args.port, args.work)
    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=True, log_level="info")
    return 0
