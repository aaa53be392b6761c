"""Losses of Gene-DML and of the systems it is compared with, written for float32 inputs.

- ``clip_loss``: symmetric InfoNCE between two L2-normalised embeddings (identity targets);
  ``normalised_clip_loss`` normalises its inputs first (DKAN's image-expression alignment).
- ``soft_target_loss``: the BLEEP-style instance-level loss of Gene-DML (paper eq. 3-4): targets
  ``softmax((I I^T + G G^T) / (2 tau))``, cross-entropy of ``G I^T / tau`` against them in both directions.
- ``kmeans``: Lloyd's k-means in torch; assignments are discrete, centroids are means of the inputs, so
  gradients flow through the centroids (as in the reference code).
- ``spectral_groups``: the public code's alternative (normalised-cut eigenvectors, then k-means).
- ``instance_group_loss``: cross-level instance-group loss (paper eq. 5): each instance of one modality
  against the other modality's group centroids, cross-entropy against that modality's assignment.
- ``self_distillation_loss``: TRIPLEX's supervised + distillation terms for per-scale predictions;
  ``distilled_mse``: DKAN's form, the fused prediction a stop-gradient teacher.
- ``bleep_loss``: BLEEP's soft-target contrastive loss (``soft_target_loss``, optionally on normalised inputs).
- ``inverse_loss_weights``: DKAN's balance of two losses by their normalised inverse values.
- ``gene_level_nt_xent``: DKAN's contrastive loss: NT-Xent over every (spot, gene) pair of a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits, targets):
    """Mean over rows of the cross-entropy of ``softmax(logits)`` against a target distribution per row."""
    return (-targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def clip_loss(image, gene, tau: float):
    """Symmetric InfoNCE (CLIP) of L2-normalised embeddings; row i of both is the same spot."""
    logits = gene @ image.T / tau
    labels = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def normalised_clip_loss(a, b, tau: float):
    """Symmetric InfoNCE between paired rows of ``a`` and ``b`` (L2-normalised here), temperature ``tau``."""
    return clip_loss(F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1), tau)


def bleep_targets(image, gene, tau: float):
    """Soft targets: the softmax of the mean of the image-image and gene-gene similarities over tau."""
    return F.softmax((image @ image.T + gene @ gene.T) / (2 * tau), dim=-1)


def soft_target_loss(image, gene, tau: float, targets=None):
    """Instance-level loss of one scale; ``targets`` default to ``bleep_targets`` (no gradient through
    them is cut: the reference code lets it flow, and so do we)."""
    logits = gene @ image.T / tau
    if targets is None:
        targets = bleep_targets(image, gene, tau)
    return (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets.T)) / 2


def bleep_loss(img, expr, temperature: float = 1.0, normalize: bool = False):
    """BLEEP's soft-target contrastive loss between paired image and expression embeddings (B, d);
    Gene-DML's instance-level loss is the same, on normalised embeddings."""
    img, expr = img.float(), expr.float()
    if normalize:
        img, expr = F.normalize(img, dim=-1), F.normalize(expr, dim=-1)
    return soft_target_loss(img, expr, temperature)


def multi_scale_instance_loss(scales: dict, gene, tau: float, soft: bool = True):
    """Mean over scales of the instance-level loss; ``scales`` maps names to (B, d) L2-normalised embeddings."""
    if not scales:
        return gene.new_zeros(())
    fn = soft_target_loss if soft else clip_loss
    return torch.stack([fn(emb, gene, tau) for emb in scales.values()]).mean()


def kmeans_seeds(x, k: int, init: str = "random"):
    """Row indices of the k initial centroids. ``random``: k distinct rows drawn with torch's generator (the
    reference seeds from the first k rows of a shuffled batch; a genedml batch is ordered by section, so its
    first rows would all come from one section); ``farthest``: farthest-first seeds."""
    k = min(int(k), len(x))
    if init == "random":
        return torch.randperm(len(x), device=x.device)[:k]
    if init == "farthest":
        return _farthest_index(x.detach(), k)
    raise ValueError(f"unknown k-means init {init!r}: random | farthest")


def kmeans(x, k: int, iters: int = 10, init: str = "random"):
    """Lloyd's k-means of the rows of ``x`` (B, d). Returns (labels (B,), centroids (k, d)).

    Seeds from ``kmeans_seeds``; an empty cluster keeps its previous centroid.
    """
    k = min(int(k), len(x))
    c = x[kmeans_seeds(x, k, init)]
    labels = None
    for _ in range(max(1, int(iters))):
        labels = torch.cdist(x.detach(), c.detach()).argmin(1)
        c = _centroids(x, labels, k, previous=c)
    return labels, c


def _farthest_index(x, k: int):
    """Farthest-first seeds: row 0, then repeatedly the row farthest from those chosen."""
    chosen = [0]
    dist = ((x - x[0]) ** 2).sum(-1)
    for _ in range(1, k):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, ((x - x[nxt]) ** 2).sum(-1))
    return torch.tensor(chosen, device=x.device)


def _centroids(x, labels, k: int, previous=None):
    # one-hot matmul rather than index_add: differentiable the same way, and much faster on CPU
    onehot = F.one_hot(labels, k).to(x.dtype).T  # (k, B)
    sums = onehot @ x
    counts = onehot.sum(1, keepdim=True)
    means = sums / counts.clamp_min(1)
    if previous is None:
        return means
    return torch.where(counts > 0, means, previous)


def spectral_groups(x, k: int, iters: int = 10):
    """Normalised-cut spectral grouping (the public code's non-k-means path): k-means on the first k
    eigenvectors of the normalised Laplacian of |cosine| similarities; centroids are means of ``x``."""
    k = min(int(k), len(x))
    with torch.no_grad():
        xn = F.normalize(x.detach().float(), dim=-1)
        w = (xn @ xn.T).abs().fill_diagonal_(0)
        deg = w.sum(0).clamp_min(1e-8)
        d = deg.pow(-0.5)
        lap = torch.eye(len(x), device=x.device) - d[:, None] * w * d[None, :]
        _, vec = torch.linalg.eigh(lap)
        emb = (d[:, None] * vec)[:, :k]
        labels, _ = kmeans(emb, k, iters)
    return labels, _centroids(x, labels, k)


def group(x, k: int, method: str = "kmeans", iters: int = 10, init: str = "random"):
    """Group the rows of ``x``: ``kmeans``, ``spectral``, or ``none`` (every instance its own group)."""
    if method == "kmeans":
        return kmeans(x, k, iters, init)
    if method == "spectral":
        return spectral_groups(x, k, iters)
    if method == "none":
        return torch.arange(len(x), device=x.device), x
    raise ValueError(f"unknown grouping {method!r}: kmeans | spectral | none")


def instance_group_loss(image_query, gene_query, image_groups, gene_groups, tau: float):
    """Cross-level instance-group loss.

    ``image_groups`` / ``gene_groups``: (labels, centroids) of each modality's grouping. Every image
    instance is classified into the gene-side groups (target: its spot's gene-side label) and every gene
    instance into the image-side groups; the two cross-entropies are averaged.
    """
    img_labels, img_centroids = image_groups
    gene_labels, gene_centroids = gene_groups
    loss_i = F.cross_entropy(image_query @ gene_centroids.T / tau, gene_labels)
    loss_g = F.cross_entropy(gene_query @ img_centroids.T / tau, img_labels)
    return (loss_i + loss_g) / 2


def self_distillation_loss(fused_pred, scale_preds: dict, target, alpha: float = 0.3):
    """TRIPLEX: MSE of the fused prediction plus, per scale, ``(1 - alpha) * MSE(scale, target) +
    alpha * MSE(fused, scale)`` (no stop-gradient, as in TRIPLEX's code). Returns (total, parts)."""
    parts = {"mse_fused": F.mse_loss(fused_pred, target)}
    total = parts["mse_fused"]
    for name, pred in scale_preds.items():
        sup = F.mse_loss(pred, target)
        dist = F.mse_loss(fused_pred, pred)
        parts[f"mse_{name}"] = sup
        parts[f"distill_{name}"] = dist
        total = total + (1 - alpha) * sup + alpha * dist
    return total, parts


def distilled_mse(fused, intermediates, y, lam: float):
    """``MSE(fused, y) + sum_s [(1 - lam) MSE(p_s, y) + lam MSE(p_s, fused.detach())]`` and its parts
    (total, mse, distill). Unlike ``self_distillation_loss`` the fused prediction is a stop-gradient teacher."""
    mse = F.mse_loss(fused, y)
    teacher = fused.detach()
    parts = [(1 - lam) * F.mse_loss(p, y) + lam * F.mse_loss(p, teacher) for p in intermediates]
    distill = sum(parts) if parts else mse * 0
    return mse + distill, mse, distill


def inverse_loss_weights(losses, boost=None):
    """Normalised inverse loss weights ``w_i = (1/L_i) / sum_j (1/L_j)`` (no gradient through them).

    ``boost``: optional per-loss factors ``c_i``, ``w_i = (c_i/L_i) / sum_j (c_j/L_j)`` (DKAN's public code
    multiplies its contrastive term's inverse by 3 before renormalising; the paper does not)."""
    inv = torch.stack([1.0 / loss.detach().float().clamp_min(1e-8) for loss in losses])
    if boost is not None:
        inv = inv * torch.as_tensor(boost, dtype=inv.dtype, device=inv.device)
    return inv / inv.sum()


def gene_level_nt_xent(a, b, tau: float, chunk: int = 4096):
    """NT-Xent over (spot, gene) pairs (DKAN's code, one direction).

    ``a`` and ``b``: (B, G, d) per-gene embeddings of the image path and the expression path. The B*G rows
    n = (spot, gene) of each are L2-normalised, ``u_n = a_n / |a_n|``, ``v_n = b_n / |b_n|``, and

        L = -1/(BG) sum_n log( exp(u_n . v_n / tau) / sum_m exp(u_n . v_m / tau) ),

    the cross-entropy of row n's similarities to every expression row m (all spots, all genes) against
    its own pair: a gene's image embedding must match the same gene of the same spot, not another gene of
    that spot nor that gene in another spot. ``tau``: DKAN uses 0.1 (cSCC 0.08). Rows are processed
    ``chunk`` at a time with activation checkpointing when gradients are needed, so memory grows with
    ``chunk * B * G`` rather than ``(B * G)^2``; the value is the same.
    """
    u = F.normalize(a.float().reshape(-1, a.shape[-1]), dim=-1)
    v = F.normalize(b.float().reshape(-1, b.shape[-1]), dim=-1)
    n = u.shape[0]
    if n <= chunk:
        return F.cross_entropy(u @ v.T / tau, torch.arange(n, device=u.device))

    def part(ui, vv, start):
        logits = ui @ vv.T / tau
        labels = torch.arange(start, start + len(ui), device=ui.device)
        return F.cross_entropy(logits, labels, reduction="sum")

    need_grad = torch.is_grad_enabled() and (u.requires_grad or v.requires_grad)
    total = u.new_zeros(())
    for start in range(0, n, chunk):
        ui = u[start : start + chunk]
        if need_grad:
            from torch.utils.checkpoint import checkpoint

            total = total + checkpoint(part, ui, v, start, use_reentrant=False)
        else:
            total = total + part(ui, v, start)
    return total / n
