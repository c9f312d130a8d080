"""Datasets, stream generators, frozen backbones and the feature cache (no strategies here)."""

from clbench.stream import Experience, Stream, StreamInfo, TensorData, TrainView

__all__ = ["Experience", "Stream", "StreamInfo", "TensorData", "TrainView"]
