"""Models from plain arguments: timm backbone, heads, classifier, batch transformer, feature perturbation, EMA,
the inference wrapper, local pretrained weights."""

from spml.models.backbone import Backbone
from spml.models.batch_transformer import BatchTransformer
from spml.models.classifier import Classifier, Normalize
from spml.models.ema import ModelEma, build_ema
from spml.models.heads import HEADS, BilinearHead, Head, LinearHead, MLPHead, PrototypeHead, build_head
from spml.models.inference import InferenceModel
from spml.models.perturb import FeaturePerturbation
from spml.models.pretrained import LITE_MODELS, load_pretrained

__all__ = [
    "HEADS",
    "LITE_MODELS",
    "Backbone",
    "BatchTransformer",
    "BilinearHead",
    "Classifier",
    "FeaturePerturbation",
    "Head",
    "InferenceModel",
    "LinearHead",
    "MLPHead",
    "ModelEma",
    "Normalize",
    "PrototypeHead",
    "build_ema",
    "build_head",
    "load_pretrained",
]
