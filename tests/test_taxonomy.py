"""The taxonomy data file: the default classes and weights, aliases, labels.txt, user files."""

from __future__ import annotations

import json

import pytest
import yaml

from bsi_d2.taxonomy import TaxonomyError, load_taxonomy, taxonomy_from_dict

DEFAULT_NAMES = [
    "skull",
    "spine",
    "chest",
    "humerus_AR",
    "humerus_AL",
    "humerus_PR",
    "humerus_PL",
    "pelvis",
    "femurs",
    "kidney",
    "lesion",
    "bladder",
]


def test_default_has_seed_000_classes_lesion_and_bladder():
    taxonomy = load_taxonomy()
    assert taxonomy.ids == list(range(1, 13))
    assert taxonomy.thing_classes == DEFAULT_NAMES
    assert [c.name for c in taxonomy.region_classes] == DEFAULT_NAMES[:9]
    assert taxonomy.lesion_ids == [11] and taxonomy.decoy_ids == [10, 12]
    assert load_taxonomy("default").thing_classes == DEFAULT_NAMES


def test_bladder_is_a_decoy_left_out_of_the_burden():
    taxonomy = load_taxonomy()
    bladder = taxonomy.by_id(12)
    assert bladder.name == "bladder" and bladder.is_decoy and bladder.exclude_from_burden
    assert bladder.bone is None and bladder.report == "bladder"
    assert taxonomy.burden_exclude_ids == [12]  # the kidney stays in BSTBI's denominator
    assert taxonomy.resolve_label("Urinary_Bladder") is bladder


def test_default_colours_are_distinct():
    colours = load_taxonomy().thing_colors
    assert len(set(colours)) == len(colours)


def test_sacrum_is_annotated_with_the_pelvis_as_in_seed_000():
    taxonomy = load_taxonomy()
    # Spiers' 8.3 % spine includes the sacrum, but the table is kept as published
    assert taxonomy.resolve_label("sacrum").name == "pelvis"
    assert taxonomy.bone_weight("spine") == pytest.approx(8.3)
    assert taxonomy.bone_weight("pelvis") == pytest.approx(7.5)


def test_default_weights_are_the_domain_table():
    taxonomy = load_taxonomy()
    expected = {
        "skull": 18.4,
        "spine": 8.3,
        "chest": 8.7,
        "humerus_right": 1.65,
        "humerus_left": 1.65,
        "pelvis": 7.5,
        "femurs": 8.9,
    }
    assert taxonomy.weights == pytest.approx(expected)
    assert sum(taxonomy.weights.values()) == pytest.approx(55.1)
    assert taxonomy.bone_weight(taxonomy.by_name("humerus_PL").bone) == pytest.approx(1.65)
    assert "Spiers" in taxonomy.weights_source


def test_aliases_resolve_case_insensitively():
    taxonomy = load_taxonomy()
    assert taxonomy.resolve_label("Metastasis").name == "lesion"
    assert taxonomy.resolve_label("  RIBS ").name == "chest"
    assert taxonomy.resolve_label("ar").name == "humerus_AR"
    assert taxonomy.resolve_label("BLADDER").name == "bladder"
    assert taxonomy.resolve_label("catheter") is None
    assert taxonomy.is_ignore_label("__IGNORE__") and taxonomy.is_background_label("_background_")


def test_flip_swaps_humerus_views_and_leaves_the_rest():
    flip = load_taxonomy().flip_map
    assert flip[4] == 6 and flip[6] == 4 and flip[5] == 7 and flip[7] == 5
    assert all(flip[i] == i for i in (1, 2, 3, 8, 9, 10, 11, 12))


def test_coco_categories_and_metadata():
    taxonomy = load_taxonomy()
    categories = taxonomy.coco_categories()
    assert categories[10] == {"id": 11, "name": "lesion", "supercategory": "lesion"}
    assert categories[11] == {"id": 12, "name": "bladder", "supercategory": "decoy"}
    meta = taxonomy.metadata()
    assert meta["thing_dataset_id_to_contiguous_id"][11] == 10
    assert meta["thing_dataset_id_to_contiguous_id"][12] == 11
    assert len(meta["thing_colors"]) == 12


def test_labels_txt(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("__ignore__\n_background_\nskull\nspine\n\nlesion\n")
    taxonomy = load_taxonomy(path)
    assert taxonomy.thing_classes == ["skull", "spine", "lesion"] and taxonomy.ids == [1, 2, 3]
    assert taxonomy.is_ignore_label("__ignore__")
    assert taxonomy.resolve_label("_background_") is None


def test_user_file_with_an_extra_class_round_trips(tmp_path):
    raw = load_taxonomy().to_dict()
    raw["classes"].append(
        {
            "id": 13,
            "name": "injection_site",
            "kind": "decoy",
            "labels": ["Injection"],
        }
    )
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    taxonomy = load_taxonomy(path)
    assert taxonomy.ids[-1] == 13 and taxonomy.resolve_label("INJECTION").name == "injection_site"
    assert taxonomy.decoy_ids == [10, 12, 13] and taxonomy.burden_exclude_ids == [12]
    json_path = tmp_path / "mine.json"
    json_path.write_text(json.dumps(taxonomy.to_dict()))
    assert load_taxonomy(json_path).to_dict() == taxonomy.to_dict()


def _one(**entry):
    return {"classes": [{"id": 1, "name": "a", **entry}]}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"classes": []}, "non-empty list"),
        ({"classes": [{"name": "a"}]}, "at least 'id' and 'name'"),
        (_one(kind="tumour"), "kind 'tumour'"),
        (_one(color=[0, 0, 300]), "color"),
        (_one(view="lateral"), "view 'lateral'"),
        ({**_one(kind="region"), "weights": {"skull": 1.0}}, "needs a 'bone'"),
        (_one(bone="skull"), "no entry under 'weights'"),
        ({"classes": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}, "unique"),
        (
            {
                "classes": [
                    {"id": 1, "name": "a", "labels": ["x"]},
                    {"id": 2, "name": "b", "labels": ["X"]},
                ]
            },
            "claimed by both",
        ),
        (_one(flip="b"), "unknown class 'b'"),
        (
            {
                "classes": [
                    {"id": 1, "name": "a", "flip": "b"},
                    {"id": 2, "name": "b"},
                    {"id": 3, "name": "c", "flip": "b"},
                ]
            },
            "symmetric",
        ),
    ],
)
def test_invalid_taxonomies_name_the_source_and_problem(raw, message):
    with pytest.raises(TaxonomyError, match=message) as err:
        taxonomy_from_dict(raw, "user.yaml")
    assert str(err.value).startswith("user.yaml")


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(TaxonomyError, match="not found"):
        load_taxonomy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(TaxonomyError, match="cannot parse"):
        load_taxonomy(bad)
    empty = tmp_path / "labels.txt"
    empty.write_text("__ignore__\n")
    with pytest.raises(TaxonomyError, match="lists no class"):
        load_taxonomy(empty)
