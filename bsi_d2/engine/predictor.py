"""The one inference interface of every engine: grey scans in, :class:`Instances` out.

Batch inference, evaluation and the demo call :class:`Predictor`. It batches, picks the
device, runs under autocast on CUDA, and leaves building, loading and the forward pass to the
:class:`~bsi_d2.engine.base.Engine` the config selects; it knows no framework itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bsi_d2.config import cfg_get
from bsi_d2.engine.base import Engine, available_device, get_engine
from bsi_d2.structures.instances import Instances
from bsi_d2.taxonomy import Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)


def resolve_device(requested: str | None, cfg: Any) -> str:
    """The device to run on: ``requested`` (a missing GPU is then an error), else MODEL.DEVICE
    (cpu, with a warning, where it names CUDA and CUDA is absent)."""
    if not requested:
        return available_device(str(cfg_get(cfg, "MODEL.DEVICE", "cpu")))
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available; use 'cpu'")
    return requested


class Predictor:
    """A trained model, in eval mode, that segments lists of merged grey scans.

    ``weights`` defaults to MODEL.WEIGHTS; ``model`` hands over an already built model (the
    trainer's, for periodic evaluation) instead of building and loading one; ``engine``
    defaults to the one MODEL.ENGINE selects.
    """

    def __init__(
        self,
        cfg: Any,
        weights: str | None = None,
        device: str | None = None,
        *,
        model: torch.nn.Module | None = None,
        engine: Engine | None = None,
        batch_size: int = 4,
        amp: bool | None = None,
    ) -> None:
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
        self.engine = engine if engine is not None else get_engine(cfg)
        self._mapper: Any = None
        weights = weights if weights is not None else str(cfg_get(cfg, "MODEL.WEIGHTS", ""))
        if model is not None:
            self.model = model
        else:
            self.model = self.engine.build_model(cfg)
            if weights:
                self.engine.load_weights(self.model, weights)
            else:
                logger.warning(
                    "no weights given (MODEL.WEIGHTS is empty): predicting with a random model"
                )
        self.model.to(self.device)
        self.model.eval()

    # -- public --------------------------------------------------------------------------------
    def __call__(self, images: Sequence[np.ndarray]) -> list[Instances]:
        """Instances (taxonomy ids, XYXY boxes, scores, full-size bool masks) per (H, W) grey
        image, in the value scale the mapper reads from the same file."""
        if self._mapper is None:
            self._mapper = build_mapper(self.cfg, is_train=False)
        samples = []
        for i, image in enumerate(images):
            array = np.asarray(image)
            if array.ndim != 2:
                raise ValueError(f"image {i}: expected an (H, W) grey array, got {array.shape}")
            samples.append(self._mapper.map_image(array, source=f"image {i}"))
        return self.predict_samples(samples)

    def predict_samples(self, samples: Sequence[dict[str, Any]]) -> list[Instances]:
        """Run on samples as the mapper makes them (``image``, ``height`` and ``width``, the
        size to report at - the original one, rescaled to by the engine - and ``image_native``
        where the model has the dense lesion head)."""
        out: list[Instances] = []
        for start in range(0, len(samples), self.batch_size):
            out.extend(self._forward(samples[start : start + self.batch_size]))
        return out

    @torch.inference_mode()
    def _forward(self, samples: Sequence[dict[str, Any]]) -> list[Instances]:
        with torch.autocast("cuda", enabled=self.amp and self.device.startswith("cuda")):
            return self.engine.forward(self.model, samples, self.taxonomy)


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
    pending: list[tuple[Any, dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        ids, samples = zip(*pending, strict=True)
        predictions.extend(zip(ids, predictor.predict_samples(samples), strict=True))
        pending.clear()

    for record in dicts:
        try:
            mapped = mapper(dict(record))
        except Exception as err:  # noqa: BLE001 - record any unreadable file and go on
            logger.error("%s: cannot be read: %s", record.get("file_name"), err)
            failed.append({"file_name": str(record.get("file_name")), "error": str(err)})
            continue
        mapped.pop("instances", None)
        mapped["height"], mapped["width"] = int(record["height"]), int(record["width"])
        pending.append((record["image_id"], mapped))
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
