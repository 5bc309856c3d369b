"""JPEG Extended 12-bit pixel data decoded by python-gdcm, in a child process.

pylibjpeg-libjpeg and Pillow decode 8-bit lossy JPEG only, and pydicom 3.0's GDCM plugin refuses
12-bit JPEG Extended (1.2.840.10008.1.2.4.51), which older gamma cameras and archives write.
GDCM's own ``ImageReader`` decodes it. It is an optional decoder (``pip install
'bsi_d2[gdcm]'``), run in a child process per file: in one process python-gdcm 3.2 crashed
(a segmentation fault reading the next file after a 12-bit decode, a double free at exit),
which would take a whole batch down with it. The child also keeps GDCM's C-level messages off
the user's terminal.

The child (``python -m bsi_d2.io.gdcm_decode FILE``) writes the stored values as one ``.npy``
array, (frames, rows, cols), to its standard output; nothing is rescaled there.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import numpy as np

TIMEOUT_S = 120.0
INSTALL_HINT = "install python-gdcm (pip install 'bsi_d2[gdcm]')"


class GDCMError(RuntimeError):
    """GDCM is absent, or could not decode the file (the message says which)."""


def gdcm_available() -> bool:
    return importlib.util.find_spec("gdcm") is not None


def decode_with_gdcm(path: str | Path, timeout: float = TIMEOUT_S) -> np.ndarray:
    """(frames, rows, cols) stored values of ``path`` as GDCM decodes them; GDCMError if GDCM is
    not installed, crashed, timed out or returned no image."""
    if not gdcm_available():
        raise GDCMError(f"python-gdcm is not installed; {INSTALL_HINT}")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bsi_d2.io.gdcm_decode", str(path)],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise GDCMError(f"GDCM did not finish within {timeout:g} s") from error
    if done.returncode != 0:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        how = f"exit status {done.returncode}" if done.returncode > 0 else "it crashed"
        raise GDCMError(f"GDCM could not decode the pixel data ({how}) {last[0]}".strip())
    try:
        return np.load(io.BytesIO(done.stdout), allow_pickle=False)
    except ValueError as error:
        raise GDCMError(f"GDCM returned no readable array ({error})") from error


def _decode_here(path: str) -> np.ndarray:
    """Decode in this process (the child's side)."""
    import gdcm

    for switch in ("DebugOff", "WarningOff", "ErrorOff"):
        getattr(gdcm.Trace, switch)()
    reader = gdcm.ImageReader()
    reader.SetFileName(path)
    if not reader.Read():
        raise SystemExit("GDCM could not read the file")
    image = reader.GetImage()
    dims = [image.GetDimension(i) for i in range(image.GetNumberOfDimensions())]
    cols, rows = dims[0], dims[1]
    frames = dims[2] if len(dims) > 2 else 1
    fmt = image.GetPixelFormat()
    bits, signed = fmt.GetBitsAllocated(), fmt.GetPixelRepresentation() == 1
    if bits not in (8, 16, 32) or fmt.GetSamplesPerPixel() != 1:
        raise SystemExit(f"GDCM gave {fmt.GetSamplesPerPixel()} samples of {bits} bits per pixel")
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    buffer = image.GetBuffer()
    if buffer is None:
        raise SystemExit("GDCM decoded no pixels")
    raw = buffer.encode("utf-8", "surrogateescape")
    if len(raw) != frames * rows * cols * dtype.itemsize:
        raise SystemExit(f"GDCM gave {len(raw)} bytes for {frames} x {rows} x {cols} pixels")
    pixels = np.frombuffer(raw, dtype=dtype).reshape(frames, rows, cols).copy()
    # GDCM frees the image with its reader; releasing them in this order avoids a double free
    del image
    del reader
    return pixels


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bsi_d2.io.gdcm_decode FILE", file=sys.stderr)
        return 2
    pixels = _decode_here(args[0])
    buffer = io.BytesIO()
    np.save(buffer, pixels, allow_pickle=False)
    sys.stdout.buffer.write(buffer.getvalue())
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
