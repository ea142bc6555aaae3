"""Models: vision (timm ViT, image/video pooling variants), text (BERT), fusion (co-attention), VLPModel."""

from workbench.models.vlp import VLPModel, build_model

__all__ = ["VLPModel", "build_model"]
