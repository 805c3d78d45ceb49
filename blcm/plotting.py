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
