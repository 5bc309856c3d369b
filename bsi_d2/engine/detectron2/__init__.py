"""The detectron2 engine: detectron2's GeneralizedRCNN, DefaultTrainer and checkpointer.

Importing this package imports detectron2; :func:`bsi_d2.engine.get_engine` does so only when a
config asks for this engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bsi_d2.engine.base import Engine, register_engine
from bsi_d2.engine.detectron2 import trainer


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

    def forward(
        self, model: Any, images: Sequence[Any], sizes: Sequence[tuple[int, int]], taxonomy: Any
    ) -> list[Any]:
        device = next(model.parameters()).device
        inputs = [
            {"image": image.to(device), "height": h, "width": w}
            for image, (h, w) in zip(images, sizes, strict=True)
        ]
        lookup = taxonomy.contiguous_to_id
        return [trainer.to_neutral_instances(o["instances"], lookup) for o in model(inputs)]
