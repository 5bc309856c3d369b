"""Difficulty presets of the phantom generator: how much disease, how many look-alikes, how real.

``standard`` is the generator as the demo has always used it (draw for draw the same patients);
``hard`` is the benchmark: the clinical disease range (BSI 0 to beyond 15 %, superscans,
confluent and diffuse disease, faint lesions, lesions outside the BSI regions, lytic lesions),
the benign look-alikes a reader knows, and anatomy and counts calibrated against a real scan.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Difficulty:
    """Switches and distributions of one preset; every field has the standard behaviour off."""

    name: str
    # disease
    disease: str = "standard"  # standard: 0-30 round, uniform, non-overlapping lesions
    superscan_fraction: float = 0.0  # patients with diffuse skeletal metastases
    diffuse_spine_fraction: float = 0.0  # positive patients with contiguous vertebral disease
    confluent_fraction: float = 0.0  # lesions drawn as a confluent cluster of blobs
    overlap_allowed: bool = False  # independent lesions may overlap in projection
    outside_fraction: float = 0.0  # lesions in bones outside every BSI region
    cold_fraction: float = 0.0  # patients with lytic (photopenic) lesions
    # look-alikes
    lookalikes: str = "standard"  # standard: bladder, injection, knee/shoulder/L5 degeneration
    # realism
    detailed_anatomy: bool = False  # facial bones, pedicles, fainter anterior ribs, depths
    depth_blur: bool = False  # blur grows with the distance from the collimator
    scatter_fraction: float = 0.0  # share of counts scattered into a wide halo
    background: float = 0.15  # counts per pixel outside the body (room and scatter)
    soft_tissue: float = 0.3  # soft-tissue uptake relative to bone
    count_range_mcts: tuple[float, float] | None = None  # counts per view; None: standard draw
    habitus_sd: float = 0.15  # soft-tissue girth spread, and its largest value
    habitus_max: float = 1.5
    habitus_mean: float = 1.1
    # annotation (a non-standard disease draws lesions at half their blurred peak, where seen)
    annotator_noise: bool = False  # jittered outlines, some faint lesions left unlabelled

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


STANDARD = Difficulty("standard")
HARD = Difficulty(
    "hard",
    disease="clinical",
    superscan_fraction=0.04,
    diffuse_spine_fraction=0.12,
    confluent_fraction=0.15,
    overlap_allowed=True,
    outside_fraction=0.08,
    cold_fraction=0.06,
    lookalikes="clinical",
    detailed_anatomy=True,
    depth_blur=True,
    scatter_fraction=0.06,
    background=0.1,  # with the scatter halo, about the NEMA NM1 scan's 0.13 outside the body
    soft_tissue=0.2,
    count_range_mcts=(0.5, 4.5),
    habitus_sd=0.22,
    habitus_max=1.9,
    habitus_mean=1.3,
)
PRESETS: dict[str, Difficulty] = {p.name: p for p in (STANDARD, HARD)}
DIFFICULTIES = tuple(PRESETS)


def get_difficulty(
    value: str | Difficulty | None, annotator_noise: bool | None = None
) -> Difficulty:
    """The preset called ``value`` (``standard`` when None), with annotator noise switched as
    asked."""
    if isinstance(value, Difficulty):
        preset = value
    else:
        name = "standard" if value is None else str(value)
        if name not in PRESETS:
            raise ValueError(
                f"unknown phantom difficulty {name!r}; choose one of {', '.join(DIFFICULTIES)}"
            )
        preset = PRESETS[name]
    if annotator_noise is None or annotator_noise == preset.annotator_noise:
        return preset
    from dataclasses import replace

    return replace(preset, annotator_noise=bool(annotator_noise))
