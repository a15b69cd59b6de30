"""torch modules: the iVAE core and its parts."""

from .ivae import IVAE, ConvStack, UFeatures
from .source_prior import SpeechSourcePrior
from .tf_ivae import TFSourceModel

__all__ = ["IVAE", "ConvStack", "SpeechSourcePrior", "TFSourceModel", "UFeatures"]
