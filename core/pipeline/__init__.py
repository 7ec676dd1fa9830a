"""The core pipeline: a list of small stages run on one mutable `Turn`."""

from core.pipeline.pipeline import Pipeline, Stage
from core.pipeline.turn import DeltaSink, Turn

__all__ = ["DeltaSink", "Pipeline", "Stage", "Turn"]
