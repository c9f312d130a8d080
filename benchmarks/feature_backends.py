"""How a frozen encoder's forward pass runs: torch eager, channels-last, bfloat16 autocast, ONNX Runtime, OpenVINO.

A backend maps preprocessed images (N, 3, S, S) to features (N, D). It is chosen by the backbone option
``backend=`` (:mod:`clbench.benchmarks.backbones`), else ``$CLBENCH_FEATURE_BACKEND``, else ``auto``:

* ``eager``: the torch module under ``inference_mode`` (the reference and the fallback);
* ``channels_last``: the same module with weights and inputs in channels-last memory format;
* ``bf16``: ``torch.autocast("cpu", bfloat16)``; its features differ (1e-2..1e-1 relative), so it is part
  of the feature-cache key (:data:`INEXACT`) and never chosen by ``auto``;
* ``onnx``: ONNX Runtime (CPU provider, all graph optimisations) on the graph exported once by
  ``torch.onnx.export`` and cached under ``<cache>/exported/`` (keyed like the features: backbone,
  resolution, weights SHA-256, transform; plus the torch version and opset);
* ``openvino``: OpenVINO on the same exported graph with ``INFERENCE_PRECISION_HINT=f32`` (its default on a
  CPU with bfloat16 units is bfloat16, which is not within tolerance);
* ``auto`` (default): ``onnx`` when onnxruntime is installed and the request has at least
  :data:`AUTO_MIN_IMAGES` images (or the graph is already exported: exporting costs seconds, a handful of
  images would not repay it), else ``eager``. ``bench/features.py`` measured it fastest of the backends
  within tolerance (see there).

Every float32 backend other than eager is checked when it is built: the features of a fixed probe batch
must agree with eager within :data:`TOLERANCE` (:func:`relative_difference`). A backend that fails the
check, the export or the import falls back to eager with a warning (an explicitly requested one that is
not installed is a :class:`UserError`). Backends within tolerance are not part of the feature-cache key.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from clbench.errors import UserError
from clbench.paths import cache_root

BACKEND_ENV = "CLBENCH_FEATURE_BACKEND"
BACKENDS: dict[str, str] = {
    "auto": "onnx for requests of many images when onnxruntime is installed, else eager (default)",
    "eager": "torch eager, float32 (reference, fallback)",
    "channels_last": "torch eager, channels-last memory format, float32",
    "bf16": "torch bfloat16 autocast (inexact: part of the feature-cache key)",
    "onnx": "ONNX Runtime on the graph exported once with torch.onnx.export, float32",
    "openvino": "OpenVINO on the exported graph, float32 inference precision",
}
INEXACT = frozenset({"bf16"})
TOLERANCE = 1e-4
AUTO_MIN_IMAGES = 1024
OPSET = 17
ENCODE_BATCH = 256
#: ONNX Runtime's batch: 64 images per call ran faster than 256 at 64 px (620 vs 591 images/s) and at 224 px
#: (52 vs 33 images/s) on 2 cores (``bench/features.py``, results/features); features do not depend on it
ORT_BATCH = 64
PROBE_IMAGES = 4


def requested_backend(option: str | None = None) -> str:
    """The backend asked for: the spec's ``backend=`` option, else ``$CLBENCH_FEATURE_BACKEND``, else ``auto``."""
    name = option or os.environ.get(BACKEND_ENV, "").strip() or "auto"
    if name not in BACKENDS:
        raise UserError(f"feature backend {name!r} (from {'backend=' if option else '$' + BACKEND_ENV}) is unknown; "
                        f"valid: {', '.join(BACKENDS)}")
    return name


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-sample relative difference ``max_i ||a_i - b_i||_2 / ||b_i||_2`` of features ``a`` against ``b``."""
    a, b = a.double().reshape(len(a), -1), b.double().reshape(len(b), -1)
    return float(((a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-30)).max())


class Eager:
    """The torch module as is (float32)."""

    name = "eager"

    def __init__(self, model: torch.nn.Module, note: str = "") -> None:
        self.model, self.note = model, note
        self.batch_size = ENCODE_BATCH

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ChannelsLast(Eager):
    """A channels-last copy of the module; inputs converted to channels-last."""

    name = "channels_last"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(copy.deepcopy(model).to(memory_format=torch.channels_last))

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


class Bf16(Eager):
    """bfloat16 autocast on the CPU (inexact)."""

    name = "bf16"

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x).float()


def onnx_session(path: Path, threads: int | None = None, level: str = "all", spinning: bool = True):
    """An ONNX Runtime CPU session: ``threads`` intra-op threads (default: torch's), one inter-op thread,
    graph optimisation ``level`` (disable, basic, extended, all), thread spinning on or off."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    so.log_severity_level = 3
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class Onnx:
    """ONNX Runtime on an exported graph (input ``x``, output ``features``)."""

    name = "onnx"

    def __init__(self, path: Path, **session: Any) -> None:
        self.path, self.session = path, onnx_session(path, **session)
        self.batch_size = ORT_BATCH

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"x": x.detach().contiguous().numpy()})[0])


class OpenVino:
    """OpenVINO on an exported graph; ``precision`` f32 (default, exact) or None (the device's default)."""

    name = "openvino"

    def __init__(self, path: Path, precision: str | None = "f32", threads: int | None = None) -> None:
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.path, self.compiled = path, ov.Core().compile_model(str(path), "CPU", config)
        self.batch_size = ENCODE_BATCH

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compiled(x.detach().contiguous().numpy())[self.compiled.output(0)]
        return torch.from_numpy(out.copy())


def exported_path(encoder, cache_dir: str | Path | None = None) -> Path:
    """Where the encoder's exported ONNX graph is cached (keyed like its features, plus torch version and opset)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in encoder.name)
    t = hashlib.sha256(encoder.transform.encode()).hexdigest()[:8]
    return (cache_root(cache_dir) / "exported" /
            f"{safe}@{encoder.resolution}-{encoder.weights_sha256[:16]}-{t}-torch{torch.__version__}-opset{OPSET}.onnx")


def export_onnx(encoder, cache_dir: str | Path | None = None) -> Path:
    """Export the encoder's module to ONNX once (dynamic batch axis, fixed resolution); later calls reuse the file."""
    from filelock import FileLock

    path = exported_path(encoder, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return path
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
        x = torch.zeros(2, 3, encoder.resolution, encoder.resolution)
        args: dict[str, Any] = {"input_names": ["x"], "output_names": ["features"], "opset_version": OPSET,
                                "dynamic_axes": {"x": {0: "n"}, "features": {0: "n"}}}
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                try:
                    torch.onnx.export(encoder.model, (x,), str(tmp), dynamo=False, **args)
                except Exception:  # noqa: BLE001 - the TorchScript exporter may be gone or fail: try torch.export
                    args.pop("dynamic_axes")
                    torch.onnx.export(encoder.model, (x,), str(tmp), dynamo=True,
                                      dynamic_shapes=({0: torch.export.Dim("n", min=1)},), **args)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def verified(runtime, encoder) -> tuple[bool, float]:
    """Whether ``runtime`` matches eager on a fixed probe batch within :data:`TOLERANCE`, and the difference."""
    g = torch.Generator().manual_seed(0)
    x = encoder.prep(torch.rand(PROBE_IMAGES, 3, encoder.resolution, encoder.resolution, generator=g))
    with torch.inference_mode():
        ref = encoder.model(x).float()
    rel = relative_difference(runtime(x).float(), ref)
    return rel <= TOLERANCE, rel


def build_runtime(name: str, encoder, cache_dir: str | Path | None = None):
    """The runtime ``name`` for ``encoder`` (float32 ones checked against eager); raises on failure."""
    if name == "eager":
        return Eager(encoder.model)
    if name == "bf16":
        return Bf16(encoder.model)
    if name == "channels_last":
        rt = ChannelsLast(encoder.model)
    elif name == "onnx":
        rt = Onnx(export_onnx(encoder, cache_dir))
    elif name == "openvino":
        rt = OpenVino(export_onnx(encoder, cache_dir))
    else:
        raise UserError(f"feature backend {name!r} is unknown; valid: {', '.join(BACKENDS)}")
    ok, rel = verified(rt, encoder)
    if not ok:
        raise ValueError(f"its features differ from eager by {rel:.2e} relative (tolerance {TOLERANCE:g})")
    return rt


def _installed(name: str) -> bool:
    modules = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}.get(name, ())
    try:
        for m in modules:
            __import__(m)
    except ModuleNotFoundError:
        return False
    return True


def select_runtime(encoder, n_images: int, cache_dir: str | Path | None = None):
    """The runtime for a request of ``n_images`` images (see the module docstring); reuses the encoder's."""
    want, current = encoder.backend, encoder.runtime
    if current is not None and getattr(current, "note", ""):
        return current  # the wanted backend already failed for this encoder: eager
    if want == "auto":
        if current is not None and current.name != "eager":
            return current  # already upgraded
        if not _installed("onnx") or (n_images < AUTO_MIN_IMAGES and not exported_path(encoder, cache_dir).exists()):
            return current or Eager(encoder.model)
        want = "onnx"
    elif current is not None and current.name == want:
        return current
    if not _installed(want):
        extra = {"onnx": "pip install 'clbench[onnx]'", "openvino": "pip install 'clbench[openvino]'"}[want]
        raise UserError(f"feature backend {want} is not installed; fix: {extra}, or set backend=eager")
    try:
        return build_runtime(want, encoder, cache_dir)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - export/compile errors of every kind: eager stays correct
        note = f"backend {want} for {encoder.spec} unusable ({type(exc).__name__}: {str(exc)[:200]}); using torch eager"
        warnings.warn(note, RuntimeWarning, stacklevel=2)
        return Eager(encoder.model, note=note)
