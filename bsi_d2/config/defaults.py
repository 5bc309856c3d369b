"""The defaults: detectron2's config plus the keys bsi_d2 adds, or the torchvision subset.

``get_cfg()`` returns detectron2's defaults when detectron2 is installed. Without it, it returns
the one table of defaults for the subset of detectron2 keys the torchvision engine understands
(:func:`subset_defaults`), so a YAML key outside that subset fails loudly instead of being
ignored. ``add_bsi_config`` adds bsi_d2's keys to either.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from fvcore.common.config import CfgNode as _FvCfgNode

ENGINES = ("auto", "detectron2", "torchvision")
LESION_META_ARCHITECTURE = "LesionRCNN"  # Mask R-CNN plus the dense lesion head, both engines
INTENSITIES = ("display", "counts")


class ConfigError(Exception):
    """A config that cannot be used; the message names the file, key or value. The CLI reports
    it in one line (exit code 2); any other exception keeps its traceback."""


class ConfigKeyError(ConfigError, KeyError):
    """A key the defaults do not know (yacs raises KeyError or AssertionError)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigValueError(ConfigError, ValueError):
    """A value outside what the key allows."""


class EngineUnavailableError(ConfigError, ImportError):
    """MODEL.ENGINE names an engine whose framework is not installed."""


class UnsupportedConfigError(ConfigError, ValueError):
    """A config value an engine cannot honour; the message names the key."""


class CfgNode(_FvCfgNode):
    """The config node used where detectron2 is absent (yacs semantics, fvcore's _BASE_)."""


def detectron2_available() -> bool:
    """Whether detectron2 can be imported (checked without importing it)."""
    return importlib.util.find_spec("detectron2") is not None


def add_bsi_config(cfg: Any) -> None:
    """Add every bsi_d2 key, with its default, to ``cfg`` (call before ``merge_from_file``)."""
    CN = type(cfg)

    cfg.MODEL.ENGINE = "auto"  # auto | detectron2 | torchvision; auto prefers detectron2

    # the dense lesion branch (bsi_d2/engine/lesion_head.py); on with META_ARCHITECTURE LesionRCNN
    cfg.MODEL.LESION_HEAD = CN()
    cfg.MODEL.LESION_HEAD.NAME = "NativeLesionHead"  # in LESION_HEAD_REGISTRY
    cfg.MODEL.LESION_HEAD.CHANNELS = (8, 16, 32)  # encoder width at strides 1, 2 and 4
    cfg.MODEL.LESION_HEAD.LOSS = "focal_tversky"  # or dice_bce, focal_tversky_bce, focal_dice
    cfg.MODEL.LESION_HEAD.TVERSKY_ALPHA = 0.3  # weight of false positives (seed 001)
    cfg.MODEL.LESION_HEAD.TVERSKY_BETA = 0.7  # weight of false negatives
    cfg.MODEL.LESION_HEAD.TVERSKY_GAMMA = 0.75  # focal exponent
    cfg.MODEL.LESION_HEAD.FOCAL_ALPHA = 0.25  # focal_dice: RetinaNet's focal loss, lesion weight
    cfg.MODEL.LESION_HEAD.FOCAL_GAMMA = 2.0
    # the loss is one ratio over a million-pixel batch: at weight 1 the head's gradients are
    # ~0.01 and it does not move in 500 iterations at the CPU leaf's learning rate
    cfg.MODEL.LESION_HEAD.LOSS_WEIGHT = 10.0
    # the head reads p2 but sends no gradient into it: trained jointly at weight 10 the lesion
    # loss took the shared FPN from the regions (skeleton F1 0.43, every scan failing QC)
    cfg.MODEL.LESION_HEAD.DETACH_FEATURES = True
    # the head's learning rate is BASE_LR times this (both engines); measured on the standard
    # set (seed 0, CPU lesion leaf): at 10 the head collapsed to an empty map, at 1 it learns
    cfg.MODEL.LESION_HEAD.LR_FACTOR = 1.0
    cfg.MODEL.LESION_HEAD.THRESHOLD = 0.5  # probability; training replaces it by the validation's
    cfg.MODEL.LESION_HEAD.MIN_AREA = 4  # px at native size: smaller components are dropped
    cfg.MODEL.LESION_HEAD.SOURCE = "union"  # lesion instances from: dense | rcnn | union

    cfg.BSI = CN()
    cfg.BSI.TAXONOMY = "default"  # taxonomy file (yaml/json/labels.txt) or "default"
    cfg.BSI.DATASET_ROOT = ""  # converter output dir to register; "" -> env BSI_D2_DATASETS
    cfg.BSI.SCORE_THRESH = 0.5  # post-processing score threshold, all classes
    cfg.BSI.CLASS_SCORE_THRESH = []  # per-class overrides [[class_name, thresh], ...]
    cfg.BSI.COMBINE_VIEWS = "mean"  # how per-view involvement is combined: mean|max|union|...
    cfg.BSI.MATCH_VIEWS = True  # a lesion seen in both views is one lesion (seed 003)
    cfg.BSI.MATCH_RADIUS = 20.0  # pixels, about 45 mm: farthest a lesion's two views may lie
    cfg.BSI.READ = CN()  # limits checked before any pixel is decoded (bsi_d2/io/limits.py)
    cfg.BSI.READ.MAX_FILE_MB = 512.0  # largest input file read
    cfg.BSI.READ.MAX_FRAME_PIXELS = 4096 * 4096  # most pixels one frame may declare
    cfg.BSI.READ.MAX_FRAMES = 4  # anterior and posterior in up to two energy windows
    cfg.BSI.QC = CN()  # per-scan quality control (bsi_d2/postprocess/qc.py)
    cfg.BSI.QC.ENABLED = True  # a scan failing a check is qc_failed, never a normal finding
    cfg.BSI.QC.MIN_VIEW_COUNTS = 1.0e5  # total counts a whole-body view holds at least
    cfg.BSI.QC.MAX_VIEW_COUNTS = 1.0e8  # ... and at most
    cfg.BSI.QC.MAX_FLAT_FRACTION = 0.01  # share of a view's pixels at its maximum (saturation)
    cfg.BSI.QC.REQUIRED_REGIONS = ("skull", "spine", "chest", "pelvis")  # bones each view shows
    cfg.BSI.QC.MIN_BODY_HEIGHT = 0.35  # body rows / view rows at least (a whole-body view)
    cfg.BSI.QC.MIN_BODY_WIDTH = 0.15  # body columns / view columns at least
    cfg.BSI.QC.MIN_BODY_ASPECT = 1.5  # body box height / width at least
    cfg.BSI.QC.MIN_SKELETON_FRACTION = 0.04  # bone-region pixels / view pixels, at least
    cfg.BSI.QC.MAX_SKELETON_FRACTION = 0.40  # ... and at most

    # pseudo-labelled scans mixed into DATASETS.TRAIN (bsi_d2/data/datasets.py, both engines)
    if "DATASETS" not in cfg:  # a foreign node may lack it; detectron2's and ours have it
        cfg.DATASETS = CN()
    cfg.DATASETS.PSEUDO = ""  # COCO file (`bsi-d2 pseudo-label`) or registered name; "": none
    cfg.DATASETS.PSEUDO_RATIO = 0.5  # share of pseudo-labelled samples per pass over the mix

    cfg.SOLVER.EPOCHS = 0  # > 0: MAX_ITER (and STEPS from EPOCH_STEPS) derived from dataset size
    cfg.SOLVER.EPOCH_STEPS = ()  # with EPOCHS > 0: epochs after which the LR is multiplied by GAMMA

    cfg.INPUT.INTENSITY = "display"  # display: the image file as is, 8 or 16 bit, as float
    cfg.INPUT.BSI_AUG = CN()
    cfg.INPUT.BSI_AUG.ENABLED = True  # seed 000's augmentation, training only
    cfg.INPUT.BSI_AUG.ROTATION = (-3.0, 3.0)  # degrees, uniform, about the image centre
    cfg.INPUT.BSI_AUG.SCALE = (0.9, 1.1)  # zoom about the centre, output size kept
    cfg.INPUT.BSI_AUG.BRIGHTNESS = (0.8, 1.7)  # intensity multiplier, uniform
    cfg.INPUT.BSI_AUG.HFLIP = False  # flip swaps views and sides: classes remapped by taxonomy
    cfg.INPUT.BSI_AUG.HFLIP_PROB = 0.5  # chance of a flip when HFLIP is on


def subset_defaults() -> CfgNode:
    """detectron2's defaults for exactly the keys the torchvision engine honours: the one table
    of defaults that engine reads (its code reads every key without a fallback of its own)."""
    _C = CfgNode()
    _C.VERSION = 2

    _C.MODEL = CfgNode()
    _C.MODEL.DEVICE = "cuda"
    _C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    _C.MODEL.WEIGHTS = ""
    _C.MODEL.MASK_ON = False
    _C.MODEL.KEYPOINT_ON = False
    _C.MODEL.LOAD_PROPOSALS = False
    _C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
    _C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]

    _C.MODEL.BACKBONE = CfgNode()
    _C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    _C.MODEL.BACKBONE.FREEZE_AT = 2

    _C.MODEL.RESNETS = CfgNode()
    _C.MODEL.RESNETS.DEPTH = 50
    _C.MODEL.RESNETS.OUT_FEATURES = ["res4"]
    _C.MODEL.RESNETS.NORM = "FrozenBN"
    _C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    _C.MODEL.RESNETS.STRIDE_IN_1X1 = True

    _C.MODEL.FPN = CfgNode()
    _C.MODEL.FPN.IN_FEATURES = []
    _C.MODEL.FPN.OUT_CHANNELS = 256

    _C.MODEL.PROPOSAL_GENERATOR = CfgNode()
    _C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
    _C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0

    _C.MODEL.ANCHOR_GENERATOR = CfgNode()
    _C.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"
    _C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]
    _C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    _C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

    _C.MODEL.RPN = CfgNode()
    _C.MODEL.RPN.HEAD_NAME = "StandardRPNHead"
    _C.MODEL.RPN.IN_FEATURES = ["res4"]
    _C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
    _C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
    _C.MODEL.RPN.POSITIVE_FRACTION = 0.5
    _C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000
    _C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
    _C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
    _C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
    _C.MODEL.RPN.NMS_THRESH = 0.7
    _C.MODEL.RPN.SMOOTH_L1_BETA = 0.0
    _C.MODEL.RPN.LOSS_WEIGHT = 1.0
    _C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0

    _C.MODEL.ROI_HEADS = CfgNode()
    _C.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"
    _C.MODEL.ROI_HEADS.NUM_CLASSES = 80
    _C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
    _C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
    _C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
    _C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
    _C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
    _C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5

    _C.MODEL.ROI_BOX_HEAD = CfgNode()
    _C.MODEL.ROI_BOX_HEAD.NAME = ""
    _C.MODEL.ROI_BOX_HEAD.NUM_FC = 0
    _C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
    _C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
    _C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
    _C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    _C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
    _C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0
    _C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
    _C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
    _C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"

    _C.MODEL.ROI_MASK_HEAD = CfgNode()
    _C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    _C.MODEL.ROI_MASK_HEAD.NUM_CONV = 0
    _C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
    _C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
    _C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
    _C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"

    _C.INPUT = CfgNode()
    _C.INPUT.MIN_SIZE_TRAIN = (800,)
    _C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    _C.INPUT.MAX_SIZE_TRAIN = 1333
    _C.INPUT.MIN_SIZE_TEST = 800
    _C.INPUT.MAX_SIZE_TEST = 1333
    _C.INPUT.FORMAT = "BGR"
    _C.INPUT.MASK_FORMAT = "polygon"

    _C.DATASETS = CfgNode()
    _C.DATASETS.TRAIN = ()
    _C.DATASETS.TEST = ()

    _C.DATALOADER = CfgNode()
    _C.DATALOADER.NUM_WORKERS = 4
    _C.DATALOADER.ASPECT_RATIO_GROUPING = True
    _C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    _C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

    _C.SOLVER = CfgNode()
    _C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
    _C.SOLVER.MAX_ITER = 40000
    _C.SOLVER.BASE_LR = 0.001
    _C.SOLVER.BASE_LR_END = 0.0
    _C.SOLVER.BIAS_LR_FACTOR = 1.0
    _C.SOLVER.MOMENTUM = 0.9
    _C.SOLVER.NESTEROV = False
    _C.SOLVER.WEIGHT_DECAY = 0.0001
    _C.SOLVER.WEIGHT_DECAY_NORM = 0.0
    _C.SOLVER.WEIGHT_DECAY_BIAS = None
    _C.SOLVER.GAMMA = 0.1
    _C.SOLVER.STEPS = (30000,)
    _C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
    _C.SOLVER.WARMUP_ITERS = 1000
    _C.SOLVER.WARMUP_METHOD = "linear"
    _C.SOLVER.CHECKPOINT_PERIOD = 5000
    _C.SOLVER.IMS_PER_BATCH = 16
    _C.SOLVER.REFERENCE_WORLD_SIZE = 0
    _C.SOLVER.CLIP_GRADIENTS = CfgNode({"ENABLED": False})
    _C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    _C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    _C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    _C.SOLVER.AMP = CfgNode({"ENABLED": False})

    _C.TEST = CfgNode()
    _C.TEST.EVAL_PERIOD = 0
    _C.TEST.DETECTIONS_PER_IMAGE = 100

    _C.OUTPUT_DIR = "./output"
    _C.SEED = -1
    _C.CUDNN_BENCHMARK = False
    return _C


def get_cfg(subset: bool | None = None) -> Any:
    """Defaults plus bsi_d2's keys: detectron2's when it is installed (unless ``subset``),
    otherwise the torchvision engine's subset, which rejects keys it does not know."""
    if subset is None:
        subset = not detectron2_available()
    if subset:
        cfg = subset_defaults()
    else:
        from detectron2.config import get_cfg as d2_get_cfg

        cfg = d2_get_cfg()
    add_bsi_config(cfg)
    return cfg


def is_subset_cfg(cfg: Any) -> bool:
    """True for a config built on the torchvision subset rather than detectron2's defaults."""
    return isinstance(cfg, CfgNode)
