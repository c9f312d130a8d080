"""Frozen backbones that turn an image stream into a feature stream.

A backbone spec is a string ``name`` or ``name@resolution``. ``flatten`` (raw pixels scaled to
[0, 1] and flattened) needs no weights; pretrained encoders and the on-disk feature cache are
registered here too.
"""

from __future__ import annotations

from pathlib import Path

from clbench.errors import UserError, unknown_name

from .stream import Experience, Stream, TensorData

BACKBONES: dict[str, str] = {
    "flatten": "raw pixels in [0, 1], flattened (no weights)",
}


def parse_backbone(spec: str) -> tuple[str, int | None]:
    name, _, res = spec.partition("@")
    if res:
        if not res.isdigit() or int(res) < 8:
            raise UserError(f"backbone {spec!r}: the resolution after '@' must be an integer >= 8 (e.g. efficientnet_lite0@64)")
        return name, int(res)
    return name, None


def check_backbone(spec: str) -> None:
    name, _ = parse_backbone(spec)
    if name not in BACKBONES:
        raise unknown_name("backbone", name, BACKBONES, "Append @<pixels> to set the input resolution.")


def _flatten(data: TensorData) -> TensorData:
    return TensorData(data.float_x().reshape(len(data), -1), data.y)


def feature_stream(stream: Stream, backbone: str | None, cache_dir: str | Path | None = None) -> Stream:
    """The same stream with every sample replaced by the backbone's features (float32, (N, D))."""
    spec = backbone or "flatten"
    check_backbone(spec)
    name, _ = parse_backbone(spec)
    if name == "flatten":
        exps = tuple(
            Experience(e.index, e.task_id, e.classes, _flatten(e.train), _flatten(e.test), e.info) for e in stream.experiences
        )
        return Stream(stream.name, stream.scenario, stream.n_classes, exps, {**stream.params, "backbone": spec}, stream.seed)
    raise AssertionError(f"backbone {name} registered without an implementation")
