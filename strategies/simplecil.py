"""SimpleCIL (Zhou et al., "Revisiting class-incremental learning with pre-trained models", 2023)."""

from __future__ import annotations

from clbench.stream import StreamInfo

from .nmc import NMC


class SimpleCIL(NMC):
    """SimpleCIL: cosine similarity to class prototypes of frozen features = ``nmc`` with ``normalize: false,
    metric: cosine`` (this class only changes those two defaults).

    LAMDA-PILOT ``models/simplecil.py``: the prototype p_c of a new class is the mean of its raw embeddings
    (train split, test transform), written once into a ``CosineLinear`` head; logits sigma cos(f, p_c) with
    sigma = 1; prediction argmax. Running means over every sample of a class equal that mean (and the
    domain-incremental sum of prototypes of RanPAC's "NCM" has the same direction), so the predictions are
    the same. ``nmc``'s default (Euclidean distance to the mean of L2-normalised features, FeCAM's "NCM")
    is a different classifier: ||z - mu_c||^2 = 1 - 2 z^T mu_c + ||mu_c||^2 depends on ||mu_c||.
    """

    search_space: dict = {}  # nothing to tune: the prototypes are class means

    def __init__(self, info: StreamInfo, *, seed: int = 0, device: str = "cpu", normalize: bool = False,
                 metric: str = "cosine") -> None:
        super().__init__(info, seed=seed, device=device, normalize=normalize, metric=metric)
