"""Feature-extraction backends side by side, and the feature cache (cold vs cached request).

    CLBENCH_DATA=../shared/data python bench/features.py [--backbone efficientnet_lite0] [--resolutions 64 224]
    CLBENCH_DATA=../shared/data python bench/features.py --cache-config configs/split_cifar10_frozen.yaml [--cache-dir DIR]

**Backends** (default mode), in one run, on real CIFAR-10 test images (random images when the data is
missing): torch eager float32 (the baseline), channels-last, bfloat16 autocast, ONNX Runtime (the encoder
exported once with ``torch.onnx.export``), OpenVINO at float32 and at its default precision. For each
input resolution: forward images/s (preprocessed inputs; best of ``--reps`` interleaved passes, so load
spikes hit every backend alike), the ratio to eager, the largest per-sample relative difference of the
features against float32 eager (max_i ||f_i - e_i|| / ||e_i||), the model's FLOPs per image
(``torch.utils.flop_counter``: 2 x multiply-adds of convolutions and matmuls) and the fraction of the
machine's peak FLOP/s reached, with the peak measured in the same run as the best of three float32
``n x n`` matmuls (2 n^3 FLOPs each). Then ONNX Runtime's settings (batch size, graph optimisation level,
thread spinning, threads), end to end (preprocessing included) eager vs the default, and the downstream
check: ``nmc`` and ``acil`` (buffer ``--acil-buffer``) on a class-incremental CIFAR-10 subset with eager features and with each
backend's features (accuracy matrices and the number of differing test predictions). The script names
the backend it would adopt: the fastest whose features stay within 1e-4 and whose downstream accuracy is
unchanged. ``uptime`` is printed at the start and the end (the machine is shared).

**Cache** (``--cache-config``): decodes the config's benchmark, then times ``feature_stream`` twice with
its backbone: the first request computes and stores the features (unless already cached: use an empty
``--cache-dir`` for a cold run), the second reads them from disk. Goal: cached at least 20x faster.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
import warnings

import torch
from clbench.studies import Publication


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        return "load " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def peak_flops(n: int = 4096, reps: int = 3) -> float:
    """Best float32 FLOP/s of ``reps`` n x n matmuls (2 n^3 FLOPs each) with torch's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def model_flops(model: torch.nn.Module, res: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, res, res))
    return float(fc.get_total_flops())


def images(n: int, data_root: str | None) -> tuple[torch.Tensor, str]:
    from clbench.benchmarks.sources import get_source
    from clbench.paths import data_root as resolve

    try:
        data = get_source("cifar10").load(resolve(data_root), False)
        return data.test.x[:n], "CIFAR-10 test images"
    except Exception as exc:  # noqa: BLE001 - no data here: random images say nothing about accuracy
        print(f"(CIFAR-10 not available: {str(exc)[:120]}; timing on random images)")
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), "random images"


def run_all(rt, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, float]:
    t = time.perf_counter()
    out = torch.cat([rt(x[s : s + batch]).float() for s in range(0, len(x), batch)])
    return out, time.perf_counter() - t


def backends_for(enc, cache_dir) -> dict[str, object]:
    from clbench.benchmarks import feature_backends as fb

    rts: dict[str, object] = {"eager": fb.Eager(enc.model), "channels_last": fb.ChannelsLast(enc.model), "bf16": fb.Bf16(enc.model)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        path = fb.export_onnx(enc, cache_dir)
        print(f"  exported {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s (0 when cached)")
        try:
            rts["onnx"] = fb.Onnx(path)
        except ImportError as exc:
            print(f"  onnx: not installed ({exc})")
        try:
            rts["openvino_f32"] = fb.OpenVino(path, "f32")
            ov_default = fb.OpenVino(path, None)
            prec = str(ov_default.compiled.get_property("INFERENCE_PRECISION_HINT"))
            rts[f"openvino_default_{prec.split(chr(39))[1] if chr(39) in prec else prec}"] = ov_default
        except ImportError as exc:
            print(f"  openvino: not installed ({exc})")
    return rts


def compare_backends(args, x: torch.Tensor, peak: float) -> dict[int, dict[str, dict[str, float]]]:
    from clbench.benchmarks.backbones import load_encoder
    from clbench.benchmarks.feature_backends import TOLERANCE, relative_difference

    results: dict[int, dict[str, dict[str, float]]] = {}
    for res in args.resolutions:
        enc = load_encoder(f"{args.backbone}@{res}")
        n = args.images_64 if res <= 96 else args.images_224
        xin = enc.prep(x[:n])
        flops = model_flops(enc.model, res)
        print(f"\n== {enc.spec}: {n} images, batch {args.batch}, {flops / 1e9:.3f} GFLOP/image, torch threads {torch.get_num_threads()}")
        rts = backends_for(enc, args.cache_dir)
        if args.only:
            rts = {k: v for k, v in rts.items() if k == "eager" or k in args.only}
        for rt in rts.values():  # warm-up (allocations, lazy init)
            rt(xin[: min(8, n)])
        best = {k: float("inf") for k in rts}
        feats: dict[str, torch.Tensor] = {}
        for _ in range(args.reps):
            for k, rt in rts.items():
                f, dt = run_all(rt, xin, args.batch)
                best[k] = min(best[k], dt)
                feats[k] = f
        eager_ips = n / best["eager"]
        rows = {}
        print(f"  {'backend':28s} {'images/s':>9s} {'x eager':>8s} {'max rel diff':>13s} {'ok':>3s} {'GFLOP/s':>8s} {'of peak':>8s}")
        for k in rts:
            ips = n / best[k]
            rel = relative_difference(feats[k], feats["eager"])
            rows[k] = {"ips": ips, "ratio": ips / eager_ips, "rel": rel, "gflops": ips * flops / 1e9, "peak_frac": ips * flops / peak}
            print(f"  {k:28s} {ips:9.1f} {ips / eager_ips:8.2f} {rel:13.2e} {'yes' if rel <= TOLERANCE else 'NO':>3s} "
                  f"{ips * flops / 1e9:8.1f} {ips * flops / peak:8.1%}")
        results[res] = rows
        if "onnx" in rts and args.tune:
            tune_onnx(enc, xin, args, eager_ips, flops, peak)
        end_to_end(enc, x[:n], args, rts)
    return results


def tune_onnx(enc, xin: torch.Tensor, args, eager_ips: float, flops: float, peak: float) -> None:
    """ONNX Runtime's settings: batch size, graph optimisation level, thread spinning, intra-op threads."""
    from clbench.benchmarks import feature_backends as fb

    path = fb.exported_path(enc, args.cache_dir)
    n = len(xin)
    configs = [("batch", b, {"level": "all"}) for b in (16, 64, 256)]
    configs += [("level", args.batch, {"level": lv}) for lv in ("basic", "extended")]
    configs += [("no spinning", args.batch, {"level": "all", "spinning": False})]
    configs += [("threads", args.batch, {"level": "all", "threads": t}) for t in sorted({1, os.cpu_count() or 1})]
    print(f"  ONNX Runtime settings ({n} images, best of {args.reps}):")
    for label, batch, kw in configs:
        rt = fb.Onnx(path, **kw)
        rt(xin[:8])
        dt = min(run_all(rt, xin, batch)[1] for _ in range(args.reps))
        shown = ", ".join(f"{k}={v}" for k, v in kw.items())
        print(f"    {label:12s} batch {batch:4d} {shown:28s} {n / dt:8.1f} images/s = {n / dt / eager_ips:5.2f}x eager, "
              f"{n / dt * flops / peak:6.1%} of peak")


def end_to_end(enc, x: torch.Tensor, args, rts) -> None:
    """Preprocessing included: eager vs onnx (what a user's cold feature request costs per image)."""
    for k in ("eager", "onnx"):
        if k not in rts:
            continue
        rt = rts[k]
        t = time.perf_counter()
        for s in range(0, len(x), args.batch):
            rt(enc.prep(x[s : s + args.batch]))
        dt = time.perf_counter() - t
        print(f"  end to end (uint8 32 px -> features, preprocessing included) {k:6s}: {len(x) / dt:8.1f} images/s")


def downstream(args) -> dict[str, bool]:
    """nmc and acil on a CIFAR-10 subset: eager features vs each backend's (accuracy matrices, predictions)."""
    from clbench.benchmarks import feature_backends as fb
    from clbench.benchmarks.backbones import load_encoder
    from clbench.benchmarks.registry import build_stream
    from clbench.stream import Experience
    from clbench.strategies.analytic import ACIL
    from clbench.strategies.base import predicted_labels
    from clbench.strategies.nmc import NMC

    res = args.downstream_resolution
    try:
        stream = build_stream({"name": "split_cifar10", "n_experiences": 5}, 0, args.data_root)
    except Exception as exc:  # noqa: BLE001
        print(f"\ndownstream check skipped: CIFAR-10 not available ({str(exc)[:120]})")
        return {}
    g = torch.Generator().manual_seed(0)
    exps = []
    for e in stream:
        tr = e.train.subset(torch.randperm(len(e.train), generator=g)[: args.downstream_train])
        te = e.test.subset(torch.randperm(len(e.test), generator=g)[: args.downstream_test])
        exps.append(Experience(e.index, e.task_id, e.classes, tr, te, e.info))
    stream = stream.with_experiences(exps)
    enc = load_encoder(f"{args.backbone}@{res}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = fb.export_onnx(enc, args.cache_dir)
        rts = {"eager": fb.Eager(enc.model), "channels_last": fb.ChannelsLast(enc.model), "bf16": fb.Bf16(enc.model)}
        try:
            rts["onnx"] = fb.Onnx(path)
        except ImportError:
            pass
        try:
            rts["openvino_f32"] = fb.OpenVino(path, "f32")
        except ImportError:
            pass
    n_train = sum(len(e.train) for e in stream)
    n_test = sum(len(e.test) for e in stream)
    print(f"\n== downstream: split CIFAR-10 seed 0, 5 experiences, {n_train} train / {n_test} test images, {enc.spec}, "
          f"nmc and acil (buffer {args.acil_buffer})")
    outcome: dict[str, dict[str, tuple[list[list[float]], torch.Tensor]]] = {}
    for k, rt in rts.items():
        def feats(d):
            xin = enc.prep(d.x)
            return d.with_x(torch.cat([rt(xin[s : s + args.batch]).float() for s in range(0, len(xin), args.batch)]))

        fs = stream.with_experiences([Experience(e.index, e.task_id, e.classes, feats(e.train), feats(e.test), e.info) for e in stream])
        outcome[k] = {}
        for name, make in (("nmc", lambda: NMC(fs.info, seed=0)),
                           ("acil", lambda: ACIL(fs.info, seed=0, buffer_size=args.acil_buffer))):
            strat = make()
            matrix, preds = [], None
            for i, e in enumerate(fs):
                strat.train_experience(e.train_view())
                row = []
                for t in fs.experiences[: i + 1]:
                    p = predicted_labels(strat.predict(t.test.x), len(t.test), fs.n_classes)
                    row.append(float((p == t.test.y).float().mean()))
                matrix.append(row)
            preds = torch.cat([predicted_labels(strat.predict(t.test.x), len(t.test), fs.n_classes) for t in fs])
            outcome[k][name] = (matrix, preds)
    same: dict[str, bool] = {}
    for k in rts:
        line, ok = [], True
        for name in ("nmc", "acil"):
            m, p = outcome[k][name]
            m0, p0 = outcome["eager"][name]
            diff = int((p != p0).sum())
            final = sum(m[-1]) / len(m[-1])
            line.append(f"{name} final avg acc {final:.4f} (eager {sum(m0[-1]) / len(m0[-1]):.4f}), "
                        f"matrix {'identical' if m == m0 else 'DIFFERENT'}, {diff} of {len(p)} predictions differ")
            ok &= m == m0
        same[k] = ok
        print(f"  {k:14s} " + "; ".join(line))
    return same


def backends_main(args) -> None:
    print(f"start: {uptime()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    peak = peak_flops()
    print(f"peak float32 matmul (4096^3, best of 3): {peak / 1e9:.1f} GFLOP/s")
    x, what = images(max(args.images_64, args.images_224), args.data_root)
    print(f"inputs: {what}, {tuple(x.shape[1:])}")
    results = compare_backends(args, x, peak)
    same = downstream(args) if args.downstream_train > 0 else {}
    peak2 = peak_flops()
    print(f"\npeak float32 matmul again: {peak2 / 1e9:.1f} GFLOP/s")
    from clbench.benchmarks.feature_backends import TOLERANCE

    eligible = [k for k in results[args.resolutions[0]] if all(results[r][k]["rel"] <= TOLERANCE for r in results)
                and (same.get(k, True) if same else True) and not k.startswith("openvino_default")]
    pick = max(eligible, key=lambda k: min(results[r][k]["ratio"] for r in results))
    print("adopt: " + pick + " (fastest at every resolution among backends within 1e-4 with unchanged downstream accuracy): "
          + ", ".join(f"{r} px {results[r][pick]['ratio']:.2f}x eager" for r in results))
    print(f"end: {uptime()}")


def cache_main(args) -> None:
    import yaml

    from clbench.benchmarks.features import feature_stream
    from clbench.benchmarks.registry import build_stream

    cfg = yaml.safe_load(open(args.cache_config))
    entry = cfg["benchmarks"][args.benchmark_index]
    if isinstance(entry, str):
        entry = {"name": entry}
    backbone = entry.get("backbone")
    print(f"start: {uptime()}")
    t0 = time.perf_counter()
    stream = build_stream(entry, args.seed, cfg.get("data_root"))
    t_build = time.perf_counter() - t0
    n = sum(len(e.train) + len(e.test) for e in stream)
    print(f"benchmark {entry['name']} (seed {args.seed}): {n} images, stream built in {t_build:.1f} s (decoded-image cache included)")
    times, hits = [], []
    for run in ("first", "second"):
        t0 = time.perf_counter()
        fs = feature_stream(stream, backbone, args.cache_dir, progress=True)
        times.append(time.perf_counter() - t0)
        hits.append(fs.params.get("feature_cache_hit"))
        print(f"{run} feature request ({backbone}): {times[-1]:.2f} s, cache hit {hits[-1]}, "
              f"feature dim {fs[0].train.x.shape[1]}", flush=True)
    if all(hits[0].values()):
        print("note: the first request was already cached; use an empty --cache-dir for a cold measurement")
    else:
        print(f"cold encode throughput: {n / times[0]:.1f} images/s")
    print(f"speed-up cached vs first: {times[0] / times[1]:.1f}x (goal >= 20x)")
    print(f"end: {uptime()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="efficientnet_lite0", help="backbone name without @res (default efficientnet_lite0)")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 224])
    ap.add_argument("--images-64", type=int, default=1024, help="images timed at resolutions <= 96 px")
    ap.add_argument("--images-224", type=int, default=256, help="images timed at larger resolutions")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2, help="interleaved timing passes (best kept)")
    ap.add_argument("--only", nargs="+", default=None, help="compare only these backends with eager (e.g. onnx openvino_f32)")
    ap.add_argument("--no-tune", dest="tune", action="store_false", help="skip the ONNX Runtime settings sweep")
    ap.add_argument("--downstream-train", type=int, default=400, help="training images per experience (0: skip)")
    ap.add_argument("--downstream-test", type=int, default=200, help="test images per experience")
    ap.add_argument("--downstream-resolution", type=int, default=64)
    ap.add_argument("--acil-buffer", type=int, default=512, help="acil's buffer width in the downstream check")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--cache-dir", default=None, help="cache folder (exported graphs; features in --cache-config mode)")
    ap.add_argument("--cache-config", default=None, help="run the feature-cache measurement on this config instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--benchmark-index", type=int, default=0)
    ap.add_argument("--publish", metavar="DIR", help="publish what this prints, the command and host facts as the study DIR")
    args = ap.parse_args()
    pub = Publication.begin(args.publish)
    if args.cache_config:
        cache_main(args)
    else:
        backends_main(args)
    pub.end(configs=[args.cache_config])


if __name__ == "__main__":
    main()
