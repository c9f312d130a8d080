"""Facts about the machine a number was measured on (recorded with every cell and bench run)."""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from typing import Any

import clbench


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """CPU cores this process may use (affinity mask, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def library_versions() -> dict[str, str]:
    """Versions of clbench, Python and the numerical libraries that are loaded."""
    out = {"clbench": clbench.__version__, "python": platform.python_version()}
    for mod in ("torch", "numpy", "scipy", "sklearn", "avalanche", "timm", "open_clip", "onnxruntime", "optuna"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = str(getattr(m, "__version__", "?"))
    return out


def device_name(device: str = "cpu") -> str:
    """``cpu: <model>`` or the CUDA device's name."""
    if str(device).startswith("cuda") and "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            return "cuda: " + torch.cuda.get_device_name(torch.device(device))
    return f"cpu: {cpu_model()}"


def host_facts(device: str = "cpu") -> dict[str, Any]:
    """CPU model, usable cores, load average at this moment, device name, library versions, host name."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = []
    return {"cpu": cpu_model(), "cores": usable_cores(), "load_average": load, "device": device_name(device),
            "hostname": platform.node(), "platform": platform.platform(), "versions": library_versions()}
