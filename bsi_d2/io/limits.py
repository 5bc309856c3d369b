"""How large a file may be before a reader decodes a pixel of it: :class:`ReadLimits`.

Readers check the limits from what costs nothing to read: the file's size (``stat``), then the
header's declared matrix (DICOM Rows, Columns, NumberOfFrames, SamplesPerPixel; PNG/TIFF width
and height from a lazy open). A file beyond them is refused with a message that names the
declared size and the limit; the reader adds the file. The methods return that reason (None when
within the limits) so this module needs nothing from the readers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MiB = 1 << 20


@dataclass(frozen=True)
class ReadLimits:
    """Limits checked before decoding; the defaults admit every whole-body layout with room.

    Whole-body views are 1024 x 256 (some cameras 1024 x 512, high-resolution modes 2048 x 1024),
    16-bit, two per study (DOMAIN.md section 1): a real two-view file holds 0.5-4 million pixels.
    """

    # the largest pixel payload the limits below admit: 64 Mi pixels of 64-bit floats
    max_file_bytes: int = 512 * MiB
    # polygons and at most one embedded image (a scan's is 1-3 MB); json.loads needs ~10x the text
    max_json_bytes: int = 64 * MiB
    # inflated before the size checks of a deflated DICOM; NM headers are a few kB to ~1 MB
    max_header_bytes: int = 16 * MiB
    # 4096 x 4096: 8x the largest camera matrix (2048 x 1024), 64x the usual 1024 x 256 view
    max_frame_pixels: int = 4096 * 4096
    # anterior and posterior in at most two energy windows (select_frames keeps the first's)
    max_frames: int = 4
    # four frames at the frame limit: 128 MiB as 16-bit; reading peaks at ~12 bytes a pixel
    max_total_pixels: int = 4 * 4096 * 4096

    def file_size_reason(self, size: int, json: bool = False) -> str | None:
        """Why a file of ``size`` bytes is not read (``json``: a Labelme file), or None."""
        limit, name = (self.max_json_bytes, "json") if json else (self.max_file_bytes, "file")
        if size <= limit:
            return None
        return (
            f"{_bytes(size)} file, over the limit of {_bytes(limit)} "
            f"(ReadLimits.max_{name}_bytes); not read"
        )

    def pixel_reason(self, rows: int, cols: int, frames: int = 1, samples: int = 1) -> str | None:
        """Why ``frames`` of ``rows`` x ``cols`` (x ``samples``) are not decoded, or None."""
        per_frame = rows * cols * samples
        matrix = f"{rows} x {cols}" + (f" x {samples} samples" if samples != 1 else "")
        if frames > self.max_frames:
            return (
                f"declares {frames} frames, over the limit of {self.max_frames} "
                "(ReadLimits.max_frames); not decoded"
            )
        if per_frame > self.max_frame_pixels:
            return (
                f"declares {matrix} pixels per frame ({per_frame:,} pixels), over the limit of "
                f"{self.max_frame_pixels:,} pixels (ReadLimits.max_frame_pixels); not decoded"
            )
        if per_frame * frames > self.max_total_pixels:
            return (
                f"declares {frames} frames of {matrix} ({per_frame * frames:,} pixels), over the "
                f"limit of {self.max_total_pixels:,} pixels (ReadLimits.max_total_pixels); "
                "not decoded"
            )
        return None


DEFAULT_LIMITS = ReadLimits()


def _bytes(size: int) -> str:
    return f"{size / MiB:,.1f} MiB" if size >= MiB else f"{size:,} bytes"


def add_limit_arguments(parser) -> None:
    """The command-line overrides of :class:`ReadLimits`, shared by every reading command."""
    parser.add_argument(
        "--max-file-mb", type=float, help="largest input file read, MiB (default 512)"
    )
    parser.add_argument(
        "--max-frame-pixels",
        type=int,
        help="most pixels one frame may declare before it is decoded (default 4096 x 4096)",
    )
    parser.add_argument("--max-frames", type=int, help="most frames a file may declare (default 4)")


def limits_from(
    base: ReadLimits | None = None,
    max_file_mb: float | None = None,
    max_frame_pixels: int | None = None,
    max_frames: int | None = None,
) -> ReadLimits:
    """``base`` (default :data:`DEFAULT_LIMITS`) with the given limits replaced; the total
    follows a raised frame limit so one frame at the limit still fits."""
    limits = base or DEFAULT_LIMITS
    changes: dict[str, int] = {}
    if max_file_mb is not None:
        changes["max_file_bytes"] = int(max_file_mb * MiB)
    if max_frame_pixels is not None:
        changes["max_frame_pixels"] = int(max_frame_pixels)
    if max_frames is not None:
        changes["max_frames"] = int(max_frames)
    limits = replace(limits, **changes)
    frames_total = limits.max_frames * limits.max_frame_pixels
    if "max_frame_pixels" in changes or "max_frames" in changes:
        limits = replace(limits, max_total_pixels=frames_total)
    return limits
