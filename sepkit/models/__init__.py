"""torch modules: the iVAE core and its parts."""

from .flow import CouplingFlow
from .ivae import IVAE, ConvStack, UFeatures
from .source_prior import SpeechSourcePrior
from .tf_ivae import TFSourceModel

__all__ = ["IVAE", "ConvStack", "CouplingFlow", "SpeechSourcePrior", "TFSourceModel", "UFeatures"]
