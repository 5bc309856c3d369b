"""The one inference interface of both engines: grey scans in, :class:`Instances` out.

Batch inference, evaluation and the demo call :class:`Predictor`; only this module (and the
trainers) know which framework runs underneath.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bsi_d2.engine.tv_model import LABEL_OFFSET, cfg_get
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

MASK_THRESHOLD = 0.5


def resolve_device(requested: str | None, cfg: Any) -> str:
    """The device to run on: ``requested``, else MODEL.DEVICE; a missing GPU is an error."""
    device = requested or str(cfg_get(cfg, "MODEL.DEVICE", "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return device


class Predictor:
    """A trained model, in eval mode, that segments lists of merged grey scans.

    ``weights`` defaults to MODEL.WEIGHTS; ``model`` hands over an already built torchvision
    model (the trainer's, for periodic evaluation) instead of building and loading one.
    """

    def __init__(
        self,
        cfg: Any,
        weights: str | None = None,
        device: str | None = None,
        *,
        model: torch.nn.Module | None = None,
        batch_size: int = 4,
        amp: bool | None = None,
    ) -> None:
        from bsi_d2.engine import resolve_engine

        self.cfg = cfg
        self.taxonomy: Taxonomy = load_taxonomy(cfg_get(cfg, "BSI.TAXONOMY", None) or None)
        num_classes = int(cfg_get(cfg, "MODEL.ROI_HEADS.NUM_CLASSES"))
        if num_classes != len(self.taxonomy.classes):
            raise ValueError(
                f"MODEL.ROI_HEADS.NUM_CLASSES={num_classes} but taxonomy "
                f"{self.taxonomy.source or self.taxonomy.name} has {len(self.taxonomy.classes)} "
                "classes"
            )
        self.device = resolve_device(device, cfg)
        self.batch_size = max(1, int(batch_size))
        self.amp = self.device.startswith("cuda") if amp is None else bool(amp)
        self.engine = "torchvision" if model is not None else resolve_engine(cfg)
        self._mapper: Any = None
        weights = weights if weights is not None else str(cfg_get(cfg, "MODEL.WEIGHTS", ""))
        if model is not None:
            self.model = model
        elif self.engine == "detectron2":
            self.model = _build_detectron2(cfg, weights)
        else:
            self.model = _build_torchvision(cfg, weights)
        self.model.to(self.device)
        self.model.eval()

    # -- public --------------------------------------------------------------------------------
    def __call__(self, images: Sequence[np.ndarray]) -> list[Instances]:
        """Instances (taxonomy ids, XYXY boxes, scores, full-size bool masks) per (H, W) grey
        image, in the value scale the mapper reads from the same file."""
        if self._mapper is None:
            self._mapper = build_mapper(self.cfg, is_train=False)
        tensors, sizes = [], []
        for i, image in enumerate(images):
            array = np.asarray(image)
            if array.ndim != 2:
                raise ValueError(f"image {i}: expected an (H, W) grey array, got {array.shape}")
            tensors.append(self._mapper.map_image(array, source=f"image {i}")["image"])
            sizes.append((int(array.shape[0]), int(array.shape[1])))
        return self.predict_tensors(tensors, sizes)

    def predict_tensors(
        self, tensors: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[Instances]:
        """Run on (3, H, W) tensors as the mapper makes them; ``sizes`` are the (height, width)
        to report at (default: the tensors' own) - detectron2 rescales to them itself."""
        sizes = list(sizes) if sizes is not None else [tuple(t.shape[-2:]) for t in tensors]
        out: list[Instances] = []
        for start in range(0, len(tensors), self.batch_size):
            chunk = tensors[start : start + self.batch_size]
            chunk_sizes = sizes[start : start + self.batch_size]
            out.extend(self._forward(chunk, chunk_sizes))
        return out

    # -- engine-specific -----------------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, tensors, sizes) -> list[Instances]:
        with torch.autocast("cuda", enabled=self.amp and self.device.startswith("cuda")):
            if self.engine == "detectron2":
                inputs = [
                    {"image": t.to(self.device), "height": h, "width": w}
                    for t, (h, w) in zip(tensors, sizes, strict=True)
                ]
                from bsi_d2.engine.d2_trainer import to_neutral_instances

                lookup = self.taxonomy.contiguous_to_id
                return [to_neutral_instances(o["instances"], lookup) for o in self.model(inputs)]
            outputs = self.model([t.to(self.device).float() for t in tensors])
        return [
            self._from_torchvision(o, t.shape[-2], t.shape[-1], h, w)
            for o, t, (h, w) in zip(outputs, tensors, sizes, strict=True)
        ]

    def _taxonomy_ids(self, contiguous: np.ndarray) -> np.ndarray:
        lookup = self.taxonomy.contiguous_to_id
        return np.array([lookup[int(k)] for k in contiguous], dtype=np.int64)

    def _from_torchvision(
        self, output: dict[str, torch.Tensor], in_h: int, in_w: int, height: int, width: int
    ) -> Instances:
        boxes = output["boxes"].float()
        masks = output["masks"].float()  # (N, 1, in_h, in_w) probabilities
        if (in_h, in_w) != (height, width) and len(boxes):
            scale = boxes.new_tensor([width / in_w, height / in_h, width / in_w, height / in_h])
            boxes = boxes * scale
            masks = torch.nn.functional.interpolate(masks, size=(height, width), mode="bilinear")
        labels = output["labels"].cpu().numpy().astype(np.int64) - LABEL_OFFSET
        return Instances(
            height,
            width,
            boxes.cpu().numpy().astype(np.float32).reshape(-1, 4),
            output["scores"].float().cpu().numpy().astype(np.float32),
            self._taxonomy_ids(labels),
            (masks[:, 0] > MASK_THRESHOLD).cpu().numpy().reshape(-1, height, width),
        )


def _build_torchvision(cfg: Any, weights: str) -> torch.nn.Module:
    from bsi_d2.engine.checkpoint import load_model_weights
    from bsi_d2.engine.tv_model import build_tv_model

    model = build_tv_model(cfg)
    if weights:
        load_model_weights(model, weights)
    else:
        logger.warning("no weights given (MODEL.WEIGHTS is empty): predicting with a random model")
    return model


def _build_detectron2(cfg: Any, weights: str) -> torch.nn.Module:
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    model = build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    return model


def build_predictor(cfg: Any, weights: str | None = None, device: str | None = None) -> Predictor:
    """A :class:`Predictor` for ``cfg`` (engine from MODEL.ENGINE) with ``weights`` loaded."""
    return Predictor(cfg, weights=weights, device=device)


def build_mapper(cfg: Any, is_train: bool) -> Callable[[dict], dict]:
    """``BsiDatasetMapper`` for ``cfg``: the one file -> tensor path of every engine."""
    from bsi_d2.data.mapper import BsiDatasetMapper

    return BsiDatasetMapper.from_config(cfg, is_train=is_train)


def predict_dataset(
    predictor: Predictor, dicts: Sequence[dict], mapper: Callable[[dict], dict]
) -> tuple[list[tuple[Any, Instances]], list[dict[str, str]]]:
    """(image_id, Instances) for every dataset dict, at its annotated size; files that cannot be
    read are skipped and listed as {"file_name", "error"} so one broken scan stops nothing."""
    predictions: list[tuple[Any, Instances]] = []
    failed: list[dict[str, str]] = []
    pending: list[tuple[Any, torch.Tensor, tuple[int, int]]] = []

    def flush() -> None:
        if not pending:
            return
        ids, tensors, sizes = zip(*pending, strict=True)
        predictions.extend(zip(ids, predictor.predict_tensors(tensors, sizes), strict=True))
        pending.clear()

    for record in dicts:
        try:
            mapped = mapper(dict(record))
        except Exception as err:  # noqa: BLE001 - record any unreadable file and go on
            logger.error("%s: cannot be read: %s", record.get("file_name"), err)
            failed.append({"file_name": str(record.get("file_name")), "error": str(err)})
            continue
        size = (int(record["height"]), int(record["width"]))
        pending.append((record["image_id"], mapped["image"], size))
        if len(pending) >= predictor.batch_size:
            flush()
    flush()
    return predictions, failed


def evaluate_on_datasets(
    predictor: Predictor,
    dataset_names: Sequence[str],
    output_dir: str | Path | None = None,
    score_thresh: float | None = None,
) -> dict[str, dict]:
    """Predict every registered data set in ``dataset_names`` and score it against its COCO
    file with :func:`bsi_d2.evaluation.evaluate_dataset`; {name: evaluation}.

    Engine-neutral: the torchvision trainer, k-fold and the detectron2 engine share it.
    """
    from bsi_d2.data.datasets import get_dataset_dicts, get_metadata
    from bsi_d2.evaluation import evaluate_dataset

    if score_thresh is None:
        score_thresh = float(cfg_get(predictor.cfg, "BSI.SCORE_THRESH", 0.5))
    mapper = build_mapper(predictor.cfg, is_train=False)
    results: dict[str, dict] = {}
    for name in dataset_names:
        predictions, failed = predict_dataset(predictor, get_dataset_dicts(name), mapper)
        out = Path(output_dir) / name if output_dir is not None else None
        evaluation = evaluate_dataset(
            get_metadata(name)["json_file"], predictions, predictor.taxonomy, out, score_thresh
        )
        evaluation["failed"] = failed
        if out is not None and failed:
            (out / "failed.json").write_text(json.dumps(failed, indent=2), encoding="utf-8")
        results[name] = evaluation
        segm = evaluation["coco"]["segm"]
        logger.info(
            "%s: mask AP %s over %d images (%d unreadable)",
            name,
            "n/a" if segm["AP"] is None else f"{100 * segm['AP']:.1f}",
            evaluation["n_images"],
            len(failed),
        )
    return results
