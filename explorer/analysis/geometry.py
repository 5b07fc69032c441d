"""Q/K geometry: one head's queries and keys drawn in the same 2-D plane, and what "closest" does and does not mean.

A head scores query i against key j by the dot product q_i·k_j (times the scale), not by their distance. Since
‖q − k‖² = ‖q‖² + ‖k‖² − 2 q·k, for a fixed query the nearest key maximises q·k − ‖k‖²/2: it is the
highest-scoring key only when the keys have equal norms. A long key far from q can out-score a short key next to it.

Two projections, each with ONE set of axes for both queries and keys (so their positions are comparable):

- ``pca``: the top-2 principal directions of all 2n vectors together (centred on their joint mean). Good for seeing
  clusters; dot products in the plane only approximate the true scores (centring and the dropped dimensions).
- ``query``: x = the chosen query's unit direction, y = the main direction of what is left. Every key's x is
  exactly q_i·k_j / ‖q_i‖, so the rightmost key is exactly the highest-scoring one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..i18n import _, percent
from ..errors import ExplorerError

Projection = Literal["pca", "query"]


@dataclass(frozen=True)
class QKPlane:
    """2-D coordinates of queries and keys in one shared plane."""

    queries: np.ndarray  # (n, 2)
    keys: np.ndarray  # (n, 2)
    method: Projection
    axis_titles: tuple[str, str]
    explained: tuple[float, float] | None = None  # PCA: share of the joint variance on each axis


def _as_numpy(x) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def pca_plane(q, k) -> QKPlane:
    """Project queries (n, d) and keys (m, d) onto the top-2 principal directions of all of them together."""
    q, k = _as_numpy(q), _as_numpy(k)
    both = np.concatenate([q, k])
    if both.shape[1] < 2:
        raise ExplorerError(_("Need at least 2 dimensions to draw a plane."))
    centred = both - both.mean(0)
    s, vt = np.linalg.svd(centred, full_matrices=False)[1:]  # singular values, right singular vectors
    basis = vt[:2].T
    # Fix each axis' sign (SVD's is arbitrary) so the plot does not flip between reruns or machines.
    signs = np.sign(basis[np.abs(basis).argmax(0), [0, 1]])
    basis = basis * np.where(signs == 0, 1, signs)
    coords = centred @ basis
    total = float((s**2).sum()) or 1.0
    explained = (float(s[0] ** 2 / total), float(s[1] ** 2 / total) if len(s) > 1 else 0.0)
    titles = (_("PC 1 ({share} of variance)").format(share=percent(explained[0])),
              _("PC 2 ({share})").format(share=percent(explained[1])))
    return QKPlane(coords[: len(q)], coords[len(q) :], "pca", titles, explained)


def query_plane(q, k, query_index: int) -> QKPlane:
    """x along query ``query_index``'s direction (no centring: x·‖q_i‖ is the exact score q_i·k_j), y along the
    main direction of the rest of all vectors once that component is removed."""
    q, k = _as_numpy(q), _as_numpy(k)
    if not 0 <= query_index < len(q):
        raise ExplorerError(_("Query {query} is out of range (0–{last}).").format(query=query_index, last=len(q) - 1))
    norm = np.linalg.norm(q[query_index])
    if norm == 0:
        raise ExplorerError(_("This query vector is zero: it gives every key the same score."))
    x_axis = q[query_index] / norm
    both = np.concatenate([q, k])
    rest = both - np.outer(both @ x_axis, x_axis)
    vt = np.linalg.svd(rest - rest.mean(0), full_matrices=False)[2]
    y_axis = vt[0] - (vt[0] @ x_axis) * x_axis
    y_axis = y_axis / (np.linalg.norm(y_axis) or 1.0)
    coords = np.stack([both @ x_axis, both @ y_axis], axis=1)
    titles = (_("along query {query} (x·‖q‖ = score before scaling)").format(query=query_index),
              _("main remaining direction"))
    return QKPlane(coords[: len(q)], coords[len(q) :], "query", titles)


def qk_plane(q, k, method: Projection = "pca", query_index: int = 0) -> QKPlane:
    """The plane for ``method`` ("pca" by default, or "query")."""
    if method == "pca":
        return pca_plane(q, k)
    if method == "query":
        return query_plane(q, k, query_index)
    raise ExplorerError(_("Unknown projection '{method}'. Use 'pca' or 'query'.").format(method=method))


@dataclass(frozen=True)
class ScoreVsDistance:
    """For one query: its scores and distances to every allowed key, and the winners by each measure."""

    scores: np.ndarray  # (m,) q·k × scale; -inf where masked
    distances: np.ndarray  # (m,) ‖q − k‖; +inf where masked
    key_norms: np.ndarray  # (m,)
    top_score_key: int
    nearest_key: int

    @property
    def agree(self) -> bool:
        return self.top_score_key == self.nearest_key


def score_vs_distance(q, k, query_index: int, scale: float, allowed=None) -> ScoreVsDistance:
    """Scores q_i·k_j·scale and Euclidean distances ‖q_i − k_j‖ over the keys the mask allows."""
    q, k = _as_numpy(q), _as_numpy(k)
    qi = q[query_index]
    ok = np.ones(len(k), dtype=bool) if allowed is None else _as_numpy(allowed).astype(bool)
    if not ok.any():
        raise ExplorerError(_("Query {query} may attend to no key under this mask.").format(query=query_index))
    scores = np.where(ok, (k @ qi) * scale, -np.inf)
    distances = np.where(ok, np.linalg.norm(k - qi, axis=1), np.inf)
    return ScoreVsDistance(scores, distances, np.linalg.norm(k, axis=1), int(scores.argmax()), int(distances.argmin()))
