"""Models: timm backbone, heads, classifier, batch transformer, feature perturbation, EMA, local weights."""
from spml.models.backbone import Backbone
from spml.models.batch_transformer import BatchTransformer
from spml.models.classifier import Classifier, build_classifier
from spml.models.ema import ModelEma, build_ema
from spml.models.heads import HEADS, Head, build_head
from spml.models.perturb import FeaturePerturbation
from spml.models.pretrained import LITE_MODELS, load_pretrained

__all__ = ["Backbone", "BatchTransformer", "Classifier", "FeaturePerturbation", "HEADS", "Head", "LITE_MODELS",
           "ModelEma", "build_classifier", "build_ema", "build_head", "load_pretrained"]
