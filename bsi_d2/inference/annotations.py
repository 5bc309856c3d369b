"""Annotations in place of a model: Labelme files or a COCO file -> the instances of each scan.

``bsi-d2 bsi`` runs the batch pipeline (:mod:`bsi_d2.inference.batch`) with these instances
instead of a model's, so a physician's manual drawing, or a model's prediction corrected in
Labelme, gets exactly the same post-processing, BSI, BSTBI, reports and folder as ``predict``.
Annotations are drawn on the merged 950 x 512 image (as ``preprocess --labelme`` and
``predict`` write it); their scores are 1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bsi_d2.postprocess.analysis import ANNOTATIONS_ENGINE
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy

ENGINE_NAME = ANNOTATIONS_ENGINE  # the record's model "engine": no model ran


class AnnotationError(ValueError):
    """Annotations that cannot be used; the message names the file and the problem."""


def coco_data(path: Path) -> dict | None:
    """The parsed file if it is a COCO instances file (``images`` and ``annotations`` lists),
    else None; Labelme files are told apart by their first 4 kB, unparsed."""
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(4096)
        if '"images"' not in head and '"annotations"' not in head:
            return None
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    is_coco = isinstance(data, dict) and isinstance(data.get("images"), list)
    return data if is_coco and "annotations" in data else None


def labelme_file_instances(path: Path, taxonomy: Taxonomy, shape: tuple[int, int]) -> Instances:
    """The instances a Labelme file draws (shapes sharing label and group_id are one), on an
    image of ``shape``; ignore regions are left out. Unknown labels and broken shapes are
    errors: a BSI from a partly read annotation would be wrong without a word."""
    from bsi_d2.io.labelme import LabelmeError, labelme_instances, load_labelme

    try:
        labelme = load_labelme(path)
        if (labelme.height, labelme.width) != tuple(shape):
            raise AnnotationError(
                f"{path}: annotations are drawn on a {labelme.height} x {labelme.width} image; "
                f"they must be on the merged {shape[0]} x {shape[1]} scan "
                "(bsi-d2 preprocess --labelme makes it)"
            )
        found, problems = labelme_instances(labelme, taxonomy, ignore="drop")
    except LabelmeError as err:
        raise AnnotationError(str(err)) from err
    errors = [p for p in [*labelme.problems, *problems] if p.severity == "error"]
    if errors:
        details = "; ".join(f"shape {p.shape}: {p.message}" for p in errors[:5])
        raise AnnotationError(f"{path}: {len(errors)} shape(s) cannot be used: {details}")
    found = [inst for inst in found if not inst.is_ignore]
    return Instances.from_masks(
        *shape, [inst.category_id for inst in found], [inst.mask() for inst in found]
    )


@dataclass
class CocoImage:
    file: Path  # the image, resolved
    image_id: int
    height: int
    width: int
    annotations: list[dict] = field(default_factory=list)


def coco_images(path: Path, data: dict, image_root: Path | None = None) -> list[CocoImage]:
    """The images of COCO instances ``data`` read from ``path``, with their (non-crowd)
    annotations. File names are looked up under ``image_root``, else beside the file, else in
    ``../images`` (the converter's layout ``datasets/bsi/{annotations,images}``)."""
    roots = [image_root] if image_root else [path.parent, path.parent.parent / "images"]
    images: dict[int, CocoImage] = {}
    for img in data.get("images") or []:
        name = str(img.get("file_name", ""))
        candidates = [Path(r) / name for r in roots if r is not None]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise AnnotationError(
                f"{path}: image {name!r} of image id {img.get('id')} not found under "
                f"{', '.join(str(r) for r in roots)} (use --images)"
            )
        images[int(img["id"])] = CocoImage(
            found.resolve(), int(img["id"]), int(img["height"]), int(img["width"])
        )
    for ann in data.get("annotations") or []:
        image = images.get(int(ann.get("image_id", -1)))
        if image is None:
            raise AnnotationError(f"{path}: annotation {ann.get('id')} names an unknown image")
        if not ann.get("iscrowd"):
            image.annotations.append(ann)
    return list(images.values())


class AnnotationSource:
    """The instances of a scan read by the batch runner, from the annotation it came from: its
    Labelme file, or the COCO image entry of its image file."""

    def __init__(self, taxonomy: Taxonomy, coco: Sequence[CocoImage] = ()) -> None:
        self.taxonomy = taxonomy
        self.coco = {image.file: image for image in coco}

    def __call__(self, sources: Sequence[str], shape: tuple[int, int]) -> Instances:
        first = Path(sources[0])
        if first.suffix.lower() == ".json":
            return labelme_file_instances(first, self.taxonomy, shape)
        image = self.coco.get(first.resolve())
        if image is None:
            raise AnnotationError(f"{first}: no annotation for this image")
        if (image.height, image.width) != tuple(shape):
            raise AnnotationError(
                f"{first}: COCO image {image.image_id} is {image.height} x {image.width}, "
                f"not the merged {shape[0]} x {shape[1]} scan"
            )
        known = set(self.taxonomy.ids)
        for ann in image.annotations:
            if int(ann["category_id"]) not in known:
                raise AnnotationError(
                    f"{first}: annotation {ann.get('id')} has category {ann['category_id']}, "
                    f"not in taxonomy {self.taxonomy.name!r}"
                )
        return Instances.from_coco(image.annotations, image.height, image.width)


def annotation_inputs(
    inputs: Sequence[str | Path], image_root: Path | None = None
) -> tuple[list[Path], list[CocoImage]]:
    """Files for the batch runner and the COCO images they stand for: Labelme files as they
    are (a folder: every JSON under it but the ``<stem>.meta.json`` companions), a COCO file
    replaced by its images."""
    from bsi_d2.data.convert import find_labelme_files

    files: list[Path] = []
    coco: list[CocoImage] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in find_labelme_files(item):  # the .meta.json companions left out
                if coco_data(path) is None:  # a COCO file in a Labelme folder must be named
                    files.append(path)
            continue
        data = coco_data(item) if item.suffix.lower() == ".json" else None
        if data is None:
            files.append(item)
            continue
        images = coco_images(item, data, image_root)
        coco.extend(images)
        files.extend(image.file for image in images)
    return files, coco
