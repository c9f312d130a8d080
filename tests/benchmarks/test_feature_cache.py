"""The feature cache: disk hits without a forward pass, misses on any key change, corrupt files rebuilt."""

from __future__ import annotations


import pytest
import torch

from clbench.benchmarks import backbones
from clbench.benchmarks.backbones import load_encoder
from clbench.benchmarks.features import feature_stream
from clbench.stream import Experience, Stream, TensorData
from clbench.errors import UserError


def _stream(seed: int = 0, n: int = 6) -> Stream:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 2
    half = n // 2
    exps = tuple(Experience(i, 0, (0, 1), TensorData(x[s], y[s]), TensorData(x[s][:2], y[s][:2]))
                 for i, s in enumerate([slice(0, half), slice(half, n)]))
    return Stream("tiny", "class-il", 2, exps)


@pytest.fixture
def calls(monkeypatch):
    """Count forward passes of every encoder."""
    count = {"n": 0}
    real = backbones.Encoder.encode

    def counting(self, x):
        count["n"] += 1
        return real(self, x)

    monkeypatch.setattr(backbones.Encoder, "encode", counting)
    return count


def test_second_request_reads_disk_resolution_change_misses_truncated_file_rebuilt(tmp_path, calls):
    cache = tmp_path / "fc"
    stream = _stream()
    first = feature_stream(stream, "efficientnet_lite0@16", cache)
    assert calls["n"] > 0 and first.params["feature_cache_hit"] == {"train": False, "test": False}
    assert first[0].train.x.shape == (3, 1280) and first[0].train.x.dtype == torch.float32
    enc = load_encoder("efficientnet_lite0@16")  # independent forward pass of the same images (later requests reuse it)
    assert torch.allclose(enc.encode(stream[1].train.x), first[1].train.x, atol=1e-5)
    files = sorted(cache.rglob("*.pt"))
    assert len(files) == 2  # one entry per split

    calls["n"] = 0
    second = feature_stream(stream, "efficientnet_lite0@16", cache)
    assert calls["n"] == 0 and second.params["feature_cache_hit"] == {"train": True, "test": True}
    for a, b in zip(first, second):
        assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)

    other = feature_stream(stream, "efficientnet_lite0@20", cache, encoder=load_encoder("efficientnet_lite0@20"))  # changed resolution: a new entry
    assert calls["n"] > 0 and other.params["feature_cache_hit"] == {"train": False, "test": False}
    assert len(sorted(cache.rglob("*.pt"))) == 4

    train_file = next(f for f in files if f.parent.name == "train")
    train_file.write_bytes(train_file.read_bytes()[: train_file.stat().st_size // 2])  # truncate
    calls["n"] = 0
    rebuilt = feature_stream(stream, "efficientnet_lite0@16", cache, encoder=enc)
    assert calls["n"] > 0 and rebuilt.params["feature_cache_hit"]["train"] is False
    assert torch.allclose(rebuilt[0].train.x, first[0].train.x, atol=1e-6)
    calls["n"] = 0
    feature_stream(stream, "efficientnet_lite0@16", cache, encoder=enc)
    assert calls["n"] == 0  # the rebuilt entry is whole again


def test_different_data_under_the_same_name_never_collides(tmp_path, calls):
    cache = tmp_path / "fc"
    enc = load_encoder("efficientnet_lite0@16")
    a = feature_stream(_stream(seed=0), "efficientnet_lite0@16", cache, encoder=enc)
    calls["n"] = 0
    b = feature_stream(_stream(seed=1), "efficientnet_lite0@16", cache, encoder=enc)  # same name, sizes, labels; other pixels
    assert calls["n"] > 0 and b.params["feature_cache_hit"]["train"] is False
    assert not torch.equal(a[0].train.x, b[0].train.x)


def test_reordered_samples_hit_the_same_entry(tmp_path, calls):
    cache = tmp_path / "fc"
    s = _stream()
    enc = load_encoder("efficientnet_lite0@16")
    first = feature_stream(s, "efficientnet_lite0@16", cache, encoder=enc)
    swapped = Stream(s.name, s.scenario, s.n_classes, (s[1], s[0]))  # another class order / seed
    calls["n"] = 0
    again = feature_stream(swapped, "efficientnet_lite0@16", cache, encoder=enc)
    assert calls["n"] == 0 and torch.equal(again[0].train.x, first[1].train.x)


def test_torchvision_backbone_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights there; CLBENCH_OFFLINE=1 (conftest)
    with pytest.raises(UserError, match="resnet18.*efficientnet_lite0"):
        feature_stream(_stream(), "resnet18@32", tmp_path / "fc")
    with pytest.raises(UserError, match="resolution"):
        feature_stream(_stream(), "efficientnet_lite0@x", tmp_path / "fc")
