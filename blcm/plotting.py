"""The figure of per-byte entropy with patch boundaries, shared by `blcm patch --plot` and TensorBoard."""

from __future__ import annotations

import numpy as np


def entropy_figure(data: bytes, entropies: np.ndarray, starts: np.ndarray, threshold: float | None,
                   title: str = "", max_labels: int = 160):
    """Entropy (nats) per byte as a line, patch starts as vertical lines, the threshold as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(entropies)
    fig, ax = plt.subplots(figsize=(min(4 + n * 0.09, 40), 3.2), dpi=100)
    ax.plot(np.arange(n), entropies, color="tab:blue", lw=1.2, marker="." if n <= 400 else None)
    for t in np.flatnonzero(starts):
        ax.axvline(t - 0.5, color="tab:red", lw=0.6, alpha=0.6)
    if threshold is not None:
        ax.axhline(threshold, color="black", ls="--", lw=0.8, label=f"threshold {threshold:.3f}")
        ax.legend(loc="upper right", fontsize=8)
    if 0 < n <= max_labels:
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels([chr(b) if 32 <= b < 127 else "·" for b in data[:n]], fontsize=6, family="monospace")
    ax.set_xlim(-1, max(n, 1))
    ax.set_ylabel("entropy (nats)")
    ax.set_title(title or f"{n} bytes, {int(np.sum(starts))} patches", fontsize=9)
    fig.tight_layout()
    return fig


def log_entropy_figure(logger, tag: str, model, ids, step: int, threshold: float | None = None,
                       target_patch_size: float | None = None, mode: str = "entropy") -> None:
    """Draw one row of byte ids (1, L) with its entropies and patch starts into TensorBoard.

    Without a ``threshold`` it is calibrated to ``target_patch_size`` on this row; an untrained model
    can be too flat to reach that, and then nothing is drawn.
    """
    from blt.ids import OFFSET
    from blt.patching import Patcher

    experiment = getattr(logger, "experiment", None)
    if not hasattr(experiment, "add_figure") or ids.shape[1] < 16:
        return
    lengths = ids.new_tensor([ids.shape[1]])
    entropies = model.entropies(ids, lengths)
    patcher = Patcher(mode)
    if threshold is None:
        try:
            threshold = patcher.calibrate(ids, lengths, entropies, target_patch_size)
        except ValueError:
            return
    starts = patcher(ids, lengths, entropies, threshold).starts[0]
    data = bytes((ids[0] - OFFSET).clamp(min=0).tolist())
    fig = entropy_figure(data, entropies[0].cpu().numpy(), starts.cpu().numpy(), threshold)
    experiment.add_figure(tag, fig, global_step=step)
