"""A tiny COCO data set in the converter's layout, written in a test's ``tmp_path``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from bsi_d2.taxonomy import load_taxonomy


def write_coco_layout(
    root: Path,
    images: Sequence[np.ndarray],
    annotations: Sequence[dict] = (),
    splits: Mapping[str, Sequence[int]] | None = None,
    *,
    file_name: str = "scan{id}.png",
    categories: Sequence[dict] | None = None,
    image_fields: Mapping[int, dict] | None = None,
) -> Path:
    """``root/images/<file_name>`` PNGs and ``root/annotations/instances_<split>.json``, as
    ``bsi-d2 convert`` leaves them; returns ``root``.

    ``images[k]`` (8-bit pixels) is image id ``k + 1``, named by ``file_name`` formatted with
    ``id`` and ``index`` (= k); ``image_fields`` adds keys to an image's record by id. Each
    annotation names its ``image_id`` and is numbered in order unless it has an ``id``. Each
    split (``"train"``, ``"fold0/val"``: ``annotations/fold0/instances_val.json``) lists its
    image ids and gets their annotations; by default one ``"train"`` split of every image.
    ``categories`` default to the built-in taxonomy's.
    """
    (root / "images").mkdir(parents=True)
    records = []
    for index, pixels in enumerate(images):
        image_id = index + 1
        name = file_name.format(id=image_id, index=index)
        Image.fromarray(pixels).save(root / "images" / name)
        height, width = pixels.shape[:2]
        record = {"id": image_id, "file_name": name, "height": height, "width": width}
        records.append({**record, **(image_fields or {}).get(image_id, {})})
    numbered = [{"id": i + 1, **ann} for i, ann in enumerate(annotations)]
    if categories is None:
        categories = load_taxonomy().coco_categories()
    if splits is None:
        splits = {"train": [r["id"] for r in records]}
    for split, ids in splits.items():
        folder, _, name = split.rpartition("/")
        path = root / "annotations" / folder / f"instances_{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        coco = {
            "images": [r for r in records if r["id"] in ids],
            "annotations": [a for a in numbered if a["image_id"] in ids],
            "categories": list(categories),
        }
        path.write_text(json.dumps(coco), encoding="utf-8")
    return root
