"""The detectron2 engine: detectron2's GeneralizedRCNN, DefaultTrainer and checkpointer.

Importing this package imports detectron2; :func:`bsi_d2.engine.get_engine` does so only when a
config asks for this engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bsi_d2.engine.base import Engine, register_engine
from bsi_d2.engine.detectron2 import lesion_rcnn, trainer

__all__ = ["Detectron2Engine", "lesion_rcnn"]  # lesion_rcnn registers LesionRCNN


@register_engine
class Detectron2Engine(Engine):
    name = trainer.ENGINE

    def build_model(self, cfg: Any) -> Any:
        from detectron2.modeling import build_model

        return build_model(cfg)

    def load_weights(self, model: Any, weights: str) -> None:
        from detectron2.checkpoint import DetectionCheckpointer

        trainer.check_weights(weights)
        DetectionCheckpointer(model).load(weights)

    def train(self, cfg: Any, resume: bool = False) -> dict[str, Any]:
        return trainer.train(cfg, resume=resume)

    def evaluate(self, cfg: Any, weights: str | None = None) -> dict[str, Any]:
        return trainer.evaluate(cfg, weights)

    def default_setup(self, cfg: Any, args: Any) -> None:
        from detectron2.engine import default_setup

        default_setup(cfg, args)  # detectron2's logging, config dump and seeding

    def launch(self, main: Any, args: Any, num_gpus: int, num_machines: int = 1) -> None:
        from detectron2.engine import launch

        launch(
            main, num_gpus, num_machines=num_machines, machine_rank=args.machine_rank,
            dist_url=args.dist_url, args=(args,),
        )  # fmt: skip

    def forward(self, model: Any, inputs: Sequence[dict[str, Any]], taxonomy: Any) -> list[Any]:
        from bsi_d2.engine.lesion_head import dense_lesions

        device = next(model.parameters()).device
        batch = []
        for item in inputs:
            sample = {"image": item["image"].to(device), "height": item["height"]}
            sample["width"] = item["width"]
            if "image_native" in item:
                sample["image_native"] = item["image_native"].to(device)
            batch.append(sample)
        lookup = taxonomy.contiguous_to_id
        return [
            dense_lesions(
                o.get("lesion_settings"),
                trainer.to_neutral_instances(o["instances"], lookup),
                o.get("lesion_prob"),
                taxonomy,
            )
            for o in model(batch)
        ]
