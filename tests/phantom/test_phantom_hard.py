"""The hard preset: hand-built cases of each lesion kind and look-alike, drawn on a real phantom
anatomy, against the geometric reference and the image-space truth."""

import json

import numpy as np
import pytest
from shapely.geometry import Point

from bsi_d2.phantom import generate_phantom, write_phantoms
from bsi_d2.phantom import lookalikes as lookalike_module
from bsi_d2.phantom.anatomy import build_anatomy, sample_body
from bsi_d2.phantom.disease import Disease, SiteShapes, contiguous_vertebrae, sample_disease
from bsi_d2.phantom.lesions import ColdSpot, Metastasis, bladder
from bsi_d2.phantom.lookalikes import PREVALENCE
from bsi_d2.phantom.presets import HARD, STANDARD, get_difficulty
from bsi_d2.phantom.reference import geometric_reference
from bsi_d2.structures.masks import polygons_to_mask
from bsi_d2.taxonomy import load_taxonomy

TAX = load_taxonomy()
PATIENT, SEED = 2, 0


def part(anatomy, name):
    return next(p for p in anatomy.parts if p.name == name)


def disc_lesion(lesion_id, site, center, radius, intensity=3.0, depth=0.5, kind="focal"):
    return Metastasis(
        lesion_id, site, center, depth, 2 * radius * 2.4, intensity, Point(center).buffer(radius)
    )


def only_bladder(anatomy, rng):
    return [bladder(anatomy.landmarks["bladder"], 700.0, rng)], []


def hard(make_disease, make_lookalikes=only_bladder, **kw):
    return generate_phantom(
        PATIENT,
        SEED,
        difficulty="hard",
        make_disease=make_disease,
        make_lookalikes=make_lookalikes,
        **kw,
    )


def lesion_instances(p):
    return [r for r in p.truth["instances"] if r["category_name"] == "lesion"]


def view_mask(p, record_polygons, view):
    flat = [[c for xy in poly for c in xy] for poly in record_polygons[view]]
    return polygons_to_mask(flat, p.truth["height"], p.truth["width"])


def test_geometric_and_image_truth_agree_for_a_lesion_inside_one_bone_in_both_views():
    def skull_lesion(anatomy, rng):
        c = part(anatomy, "cranium").geometry.centroid
        return Disease([disc_lesion(1, "skull", (c.x, c.y), 9.0)], pattern="focal")

    p = hard(skull_lesion)
    ref = p.truth["reference"]
    assert [r["view"] for r in lesion_instances(p)] == ["anterior", "posterior"]
    assert ref["involvement"]["skull"] > 0.03
    assert p.truth["bsi"] == pytest.approx(ref["bsi"], rel=0.06)
    assert p.truth["involvement"]["skull"]["combined"] == pytest.approx(
        ref["involvement"]["skull"], rel=0.06
    )
    assert p.truth["lesion_count"] == 1


def test_confluent_lesion_is_one_lesion():
    def confluent(anatomy, rng):
        c = part(anatomy, "cranium").geometry.centroid
        shape = Point(c.x - 4, c.y).buffer(6).union(Point(c.x + 5, c.y + 3).buffer(5))
        m = Metastasis(1, "skull", (c.x, c.y), 0.5, 30.0, 3.0, shape, kind="confluent")
        return Disease([m], pattern="focal")

    p = hard(confluent)
    assert p.truth["lesion_count"] == 1
    assert p.truth["lesions"][0]["kind"] == "confluent"
    assert all(len(r["segmentation"]) > 0 for r in lesion_instances(p))


def test_overlapping_lesions_at_two_depths_are_two_lesions_counted_once_in_area():
    def lesions(anatomy, both):
        c = part(anatomy, "cranium").geometry.centroid
        a = disc_lesion(1, "skull", (c.x - 3, c.y), 7.0, depth=0.15)
        b = disc_lesion(2, "skull", (c.x + 3, c.y), 7.0, depth=0.85)
        return Disease([a, b] if both else [a], pattern="focal")

    two = hard(lambda a, r: lesions(a, True))
    one = hard(lambda a, r: lesions(a, False))
    union = Point(0, 0).buffer(7.0).union(Point(6, 0).buffer(7.0)).area
    ratio = (
        two.truth["reference"]["involvement"]["skull"]
        / one.truth["reference"]["involvement"]["skull"]
    )
    assert ratio == pytest.approx(union / Point(0, 0).buffer(7.0).area, rel=1e-6)
    assert two.truth["lesion_count"] == 2
    assert len(lesion_instances(two)) == 4  # each seen in both views


def test_contiguous_vertebral_disease_spans_several_vertebrae():
    def spine(anatomy, rng):
        m = contiguous_vertebrae(SiteShapes(anatomy), np.random.default_rng(5))
        return Disease([m], pattern="diffuse_spine")

    p = hard(spine)
    lesion = p.truth["lesions"][0]
    assert lesion["kind"] == "diffuse_spine"
    assert p.truth["reference"]["involvement"]["spine"] > 0.1
    assert p.truth["bsi_per_bone"]["spine"] > 0.0
    assert p.truth["lesion_count"] == 1


def test_lesion_outside_every_region_is_labelled_but_not_in_the_bsi():
    def tibia(anatomy, rng):
        c = part(anatomy, "tibia").geometry.centroid
        return Disease([disc_lesion(1, "tibia", (c.x, c.y), 4.0, depth=0.3)], pattern="focal")

    p = hard(tibia)
    ref = p.truth["reference"]
    assert ref["outside_regions"] == [1] and ref["bsi"] == 0.0
    assert p.truth["lesions"][0]["outside_regions"] is True
    assert lesion_instances(p)  # an annotator draws it
    assert p.truth["bsi"] == 0.0
    assert p.truth["lesion_pixels_outside"] > 0


def test_faint_lesion_is_in_the_reference_but_not_drawn():
    def faint(anatomy, rng):
        c = part(anatomy, "cranium").geometry.centroid
        return Disease([disc_lesion(1, "skull", (c.x, c.y), 6.0, intensity=0.05)])

    p = hard(faint)
    ref = p.truth["reference"]
    assert ref["bsi"] > 0.0 and ref["bsi_labelled"] == 0.0
    assert not lesion_instances(p) and p.truth["bsi"] == 0.0
    visibility = p.truth["lesions"][0]["visibility"]
    assert not any(v["visible"] for v in visibility.values())


def test_superscan_has_faint_kidneys():
    def kidney_to_bone(p):
        view = p.posterior.astype(float)
        kidney = polygons_to_mask(
            [[c for xy in poly for c in xy] for poly in _kidney_polys(p)],
            *view.shape,
        )
        return view[kidney].mean() / np.percentile(view[view > 2], 95)

    def diffuse(anatomy, rng, superscan):
        shapes = SiteShapes(anatomy)
        from bsi_d2.phantom.disease import diffuse_lesion

        m = diffuse_lesion(shapes, "spine", 0.8, np.random.default_rng(1), "superscan")
        return Disease([m], superscan=superscan, pattern="superscan" if superscan else "focal")

    superscan = hard(lambda a, r: diffuse(a, r, True))
    ordinary = hard(lambda a, r: diffuse(a, r, False))
    assert superscan.truth["superscan"] is True
    assert kidney_to_bone(superscan) < 0.5 * kidney_to_bone(ordinary)


def _kidney_polys(p):
    """Kidney polygons of the posterior view, in that view's own frame."""
    out = []
    for shape in p.shapes:
        if shape["label"] != "kidney":
            continue
        xs = [x for x, _ in shape["points"]]
        if min(xs) >= 256:
            placement = p.truth["placements"][1]
            out.append(
                [
                    [x - placement["col_offset"], y - placement["row_offset"]]
                    for x, y in shape["points"]
                ]
            )
    return out


def test_lytic_lesion_takes_uptake_away_and_is_recorded_not_drawn():
    def lytic(anatomy, rng):
        ilium = part(anatomy, "ilium").geometry
        c = ilium.centroid
        cold = ColdSpot("lytic", Point(c.x, c.y).buffer(5.0), 0.85, 0.6, lesion=True)
        return Disease([], cold=[cold], pattern="none")

    with_cold = hard(lytic)
    without = hard(lambda a, r: Disease([]))
    record = with_cold.truth["cold_spots"][0]
    assert record["kind"] == "lytic" and record["metastasis"] is True
    assert not lesion_instances(with_cold)
    inside = view_mask(with_cold, record["polygons"], "posterior")
    cold_counts = with_cold.merged.counts[inside].mean()
    normal_counts = without.merged.counts[inside].mean()
    assert cold_counts < 0.75 * normal_counts


def test_every_lookalike_kind_is_recorded_drawn_and_never_labelled(monkeypatch):
    monkeypatch.setattr(lookalike_module, "PREVALENCE", dict.fromkeys(PREVALENCE, 1.0))
    p = hard(lambda a, r: Disease([]), make_lookalikes=None)
    kinds = {r["kind"] for r in p.truth["lookalikes"]}
    assert kinds >= set(PREVALENCE) - {"prosthesis"}
    assert {r["kind"] for r in p.truth["cold_spots"]} == {"prosthesis"}
    assert not lesion_instances(p) and p.truth["lesion_count"] == 0 and p.truth["bsi"] == 0.0
    plain = hard(lambda a, r: Disease([]))
    for record in p.truth["lookalikes"]:
        if record["kind"] == "bladder":
            continue
        view = next(iter(record["polygons"]))
        mask = view_mask(p, record["polygons"], view)
        assert p.merged.counts[mask].sum() > plain.merged.counts[mask].sum(), record["kind"]


def test_annotator_noise_changes_the_labels_not_the_image():
    clean = generate_phantom(0, SEED, difficulty="hard")
    noisy = generate_phantom(0, SEED, difficulty="hard", annotator_noise=True)
    assert np.array_equal(clean.anterior, noisy.anterior)
    assert np.array_equal(clean.posterior, noisy.posterior)
    assert clean.shapes != noisy.shapes
    for lesion in noisy.truth["lesions"]:
        for seen in lesion.get("visibility", {}).values():
            assert not seen["labelled"] or seen["visible"]  # noise never invents a lesion


def test_hard_phantom_is_deterministic_and_the_same_in_a_pool(tmp_path):
    write_phantoms(tmp_path, 3, seed=4, workers=2, difficulty="hard")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["difficulty"] == "hard"
    for i in range(3):
        p = generate_phantom(i, 4, difficulty="hard")
        written = json.loads((tmp_path / "truth" / f"{p.patient}.json").read_text())
        assert written == json.loads(json.dumps(p.truth))
        assert written["difficulty"] == "hard"


def test_disease_range_reaches_clinical_burden_with_a_skew():
    """The disease of 300 hard patients (no rendering): many without, most low, some high."""
    bsis = []
    for i in range(300):
        rng = np.random.default_rng(np.random.SeedSequence([7, i]))
        anatomy = build_anatomy(sample_body(rng, HARD.habitus_sd), rng, detailed=True)
        disease = sample_disease(anatomy, HARD, rng)
        bsis.append(geometric_reference(anatomy.regions, disease.metastases, TAX.weights)["bsi"])
    bsis = np.array(bsis)
    assert (bsis == 0).mean() > 0.15
    assert bsis.max() >= 15.0
    assert np.median(bsis[bsis > 0]) < 2.0


def test_presets():
    assert get_difficulty(None) is STANDARD and get_difficulty("hard") is HARD
    assert get_difficulty("hard", annotator_noise=True).annotator_noise is True
    with pytest.raises(ValueError, match="unknown phantom difficulty 'harder'"):
        get_difficulty("harder")
    with pytest.raises(ValueError, match="hard preset"):
        generate_phantom(0, 0, make_disease=lambda a, r: Disease([]))
    assert generate_phantom(0, 0).truth["difficulty"] == "standard"
