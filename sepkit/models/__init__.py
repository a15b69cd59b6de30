"""torch modules: the iVAE core and its parts."""

from .ivae import IVAE, ConvStack, UFeatures

__all__ = ["IVAE", "ConvStack", "UFeatures"]
