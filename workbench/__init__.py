"""workbench: an experiment-tracking ablation workbench for vision-language pre-training."""

__version__ = "0.1.0"
