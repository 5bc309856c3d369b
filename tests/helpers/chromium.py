"""Debian's Chromium for the browser tests: where it is, the marks that skip without it, and
the flags that keep it quiet on a machine with no outside network (without them it keeps
trying to reach its update and sync services, and those refused connections slow it down)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
QUIET_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
MARKS = (
    pytest.mark.chromium,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed"),
)
