"""``bsi-d2 serve``: a small web application on the toolkit's own reader, preprocessing,
predictor, post-processing, quality control and reports, for physicians to upload a scan, adjust
it, run the segmentation and read its BSI. One process, no external services.

What lives where (each module's docstring says more):

- :mod:`~bsi_d2.web.users`: the accounts file (TOML, argon2id hashes) and ``--add-user``;
- :mod:`~bsi_d2.web.security`: sessions, CSRF tokens bound to them, the login throttle;
- :mod:`~bsi_d2.web.workarea`: per-user job folders with pseudonymous names;
- :mod:`~bsi_d2.web.uploads`: the streamed, size-limited multipart upload and its checks;
- :mod:`~bsi_d2.web.adjust`: swap, mirror, crop and window, and the preview;
- :mod:`~bsi_d2.web.jobs`: the job queue (one worker thread by default) around ``run_batch``;
- :mod:`~bsi_d2.web.viewer`: the result's overlay with regions and lesions toggled;
- :mod:`~bsi_d2.web.app`: the FastAPI routes and Jinja2 pages.

FastAPI, Starlette, Jinja2, python-multipart, argon2-cffi and uvicorn are imported where they
are used, through :func:`require`, so the rest of the toolkit never needs them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = "pip install bsi_d2[web]"


class WebDependencyError(ImportError):
    """A package of the web stack is missing; the message says what to install."""


def require(module: str) -> ModuleType:
    """Import ``module`` of the web stack, or fail with one clear message."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise WebDependencyError(
            f"bsi-d2 serve needs {module.split('.')[0]}, which is not installed: {INSTALL_HINT}"
        ) from error
