"""The Gene-DML head: ``type: genedml`` in a head's config section.

Settings resolve in layers (``genedml.heads.presets``): training defaults < model defaults < ``size``
(small | her2st | stnet | cscc) < ``preset`` (paper | reference_code) < ``variant`` (full | plain |
multiscale | groups | no-global | no-grouping | no-group-projection | mse-only) < the head's own keys (e.g. ``k``,
``lambda_ig``, ``tau_ig`` for the sweeps). The resolved settings are saved with every fold's model.

Training loss per batch (paper eq. 7): ``w_ins * L_ins + lambda_ig * L_cross + w_pred * L_pred``.
"""

from __future__ import annotations

import logging

from genedml.heads import presets
from genedml.heads.base import section_settings
from genedml.heads.inputs import check_choice, set_output_bias, training_locals
from genedml.heads.torch_head import TRAIN_DEFAULTS, Batch, TorchHead

log = logging.getLogger(__name__)


class GeneDMLHead(TorchHead):
    kind = "genedml"

    @classmethod
    def settings(cls, params: dict | None) -> dict:
        """Resolved in layers (``genedml.heads.presets``), then checked."""
        settings = presets.resolve("genedml", {**cls.COMMON, **TRAIN_DEFAULTS}, section_settings(cls.kind, params))
        for key in ("instance_targets", "grouping", "ig_queries", "pool", "kmeans_init", "local_input"):
            check_choice(key, settings[key])
        bad = sorted(set(settings["instance_scales"]) - {"local", "neighbour", "global", "fused"})
        if bad:
            raise ValueError(f"genedml: unknown instance_scales {bad}; use local, neighbour, global or fused")
        return settings

    def build_model(self, dims: dict):
        from genedml.networks.gene_dml_net import GeneDML

        return GeneDML(self.params, dims)

    def init_model(self, model, train) -> None:
        set_output_bias(model.predictor[-1], train)
        model.image.set_input_stats(training_locals(train))

    def loss(self, model, batch: Batch, epoch: int):
        out = model.encode_image(batch)
        y = batch.targets
        pred = model.predictor(out["fused"])
        with _full_precision(y):
            return self._losses(model, out, pred.float(), y)

    def _losses(self, model, out, pred, y):
        """The loss terms, in float32 (outside any autocast: temperatures of 0.07 and k-means want it)."""
        import torch.nn.functional as F

        from genedml.networks import losses

        p = self.params
        l_pred = F.mse_loss(pred, y)
        total = float(p["w_pred"]) * l_pred
        parts = {"mse": float(l_pred.detach())}
        scales = [s for s in p["instance_scales"] if s == "fused" or s in out["scales"]]
        use_ig = float(p["lambda_ig"]) > 0
        if (scales or use_ig) and len(y) >= 2:
            gene = F.normalize(model.encode_gene(y).float(), dim=-1)  # gene encoder in float32 too
            if scales:
                emb = {
                    s: F.normalize((out["fused"] if s == "fused" else out["scales"][s]).float(), dim=-1) for s in scales
                }
                l_ins = losses.multi_scale_instance_loss(
                    emb, gene, float(p["tau_ins"]), soft=p["instance_targets"] == "soft"
                )
                total = total + float(p["w_ins"]) * l_ins
                parts["instance"] = float(l_ins.detach())
            if use_ig:
                l_ig = self._instance_group(model, out["fused"].float(), gene)
                total = total + float(p["lambda_ig"]) * l_ig
                parts["instance_group"] = float(l_ig.detach())
        return total, parts

    def _instance_group(self, model, fused, gene):
        import torch.nn.functional as F

        from genedml.networks import losses

        p = self.params
        if p["group_projection"]:
            z_img, z_gene = model.group_space(fused).float(), model.group_space(gene).float()
        else:  # group the L2-normalised instance embeddings themselves
            z_img, z_gene = F.normalize(fused, dim=-1), gene
        opts = dict(k=int(p["k"]), method=p["grouping"], iters=int(p["kmeans_iters"]), init=p["kmeans_init"])
        img_labels, img_c = losses.group(z_img, **opts)
        gene_labels, gene_c = losses.group(z_gene, **opts)
        if p["normalise_centroids"]:
            img_c, gene_c = F.normalize(img_c, dim=-1), F.normalize(gene_c, dim=-1)
        if p["ig_queries"] == "instance":  # paper eq. 5: the instance embeddings against the centroids
            q_img, q_gene = F.normalize(fused, dim=-1), gene
        elif p["ig_queries"] == "raw":  # the public code: the raw fused image token, the normalised gene token
            q_img, q_gene = fused, gene
        else:  # projected: the queries in the grouping space too
            q_img, q_gene = z_img, z_gene
        return losses.instance_group_loss(q_img, q_gene, (img_labels, img_c), (gene_labels, gene_c), float(p["tau_ig"]))


def _full_precision(tensor):
    """A context that switches autocast off on the tensor's device."""
    import torch

    return torch.autocast(tensor.device.type, enabled=False)
