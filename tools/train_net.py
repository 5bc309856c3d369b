#!/usr/bin/env python
"""Train or evaluate Mask R-CNN on registered bone-scan data sets, detectron2's train_net shape.

    python tools/train_net.py --config-file configs/mask_rcnn_R_18_FPN_cpu_bsi.yaml \
        BSI.DATASET_ROOT datasets/bsi OUTPUT_DIR output/r18
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/r18/model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 4      # one process per GPU

Runs on detectron2 where it is installed (MODEL.ENGINE auto/detectron2), else on torchvision.
The same as ``bsi-d2 train``; the logic lives in ``bsi_d2.commands.train``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bsi_d2.commands import train


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    train.add_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> dict:
    return train.run(args)


def launch(args: argparse.Namespace) -> dict | None:
    """One process per GPU for --num-gpus > 1; a plain call to main otherwise."""
    return train.launch(args)


if __name__ == "__main__":
    arguments = argument_parser().parse_args()
    print("Command Line Args:", arguments)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(train.main(arguments))
