"""DKAN head: its loss terms on known cases, the shared read-out, sizes and variants, global context, save/load."""

import numpy as np
import pandas as pd
import pytest
import torch

from genedml.evaluation.metrics import nanmean, pearson_per_gene
from genedml.heads import head_class
from genedml.heads.torch_head import make_batch, section_tensors
from genedml.networks.dkan_net import DKAN
from genedml.networks.losses import distilled_mse, gene_level_nt_xent, inverse_loss_weights, normalised_clip_loss
from support.sections import synthetic_section

pytestmark = pytest.mark.usefixtures("one_thread")


def test_adaptive_weights_are_normalised_inverse_losses():
    a = torch.tensor(1.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    w = inverse_loss_weights([a, b])
    np.testing.assert_allclose(w.numpy(), [0.75, 0.25])
    assert not w.requires_grad  # weights are constants: gradients flow only through the losses
    total = w[0] * a + w[1] * b
    assert float(w[0] * a.detach()) == pytest.approx(float(w[1] * b.detach()))  # every term contributes the same value
    total.backward()
    assert a.grad.item() == pytest.approx(0.75) and b.grad.item() == pytest.approx(0.25)


def test_normalised_clip_loss_is_symmetric_and_smallest_for_aligned_pairs():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    assert normalised_clip_loss(a, b, 0.1).item() == pytest.approx(normalised_clip_loss(b, a, 0.1).item(), rel=1e-6)
    aligned = normalised_clip_loss(a, a, 0.1).item()
    shuffled = normalised_clip_loss(a, a[torch.randperm(16, generator=g)], 0.1).item()
    assert aligned < shuffled and aligned < normalised_clip_loss(a, b, 0.1).item()
    # orthogonal, aligned pairs at a low temperature: the loss vanishes
    eye = torch.eye(8)
    assert normalised_clip_loss(eye, eye, 0.01).item() < 1e-6
    # identical rows cannot be told apart: log(B)
    same = torch.ones(4, 3)
    assert normalised_clip_loss(same, same, 0.1).item() == pytest.approx(np.log(4), rel=1e-5)


def test_self_distillation_on_known_values():
    y = torch.zeros(2, 3)
    fused = torch.full((2, 3), 1.0, requires_grad=True)
    inter = torch.full((2, 3), 3.0, requires_grad=True)
    total, mse, distill = distilled_mse(fused, [inter], y, lam=0.25)
    assert mse.item() == pytest.approx(1.0)
    assert distill.item() == pytest.approx(0.75 * 9.0 + 0.25 * 4.0)
    assert total.item() == pytest.approx(1.0 + 7.75)
    distill.backward()
    assert fused.grad is None or float(fused.grad.abs().sum()) == 0.0  # the fused prediction is the teacher


@pytest.fixture(scope="module")
def sections():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 6))
    return [synthetic_section(f"s{i}", rng, w) for i in range(4)]


@pytest.fixture(scope="module")
def gene_file(tmp_path_factory):
    """A gene-embedding file as `genedml gene-semantics` writes it (random vectors: no model load here)."""
    import json

    path = tmp_path_factory.mktemp("dkan") / "semantics.npz"
    rng = np.random.default_rng(1)
    genes = [f"g{i}" for i in range(6)][::-1]  # stored in another order than the targets
    np.savez(
        path,
        genes=np.array(genes),
        embeddings=rng.normal(size=(6, 12)).astype(np.float32),
        texts=np.array(genes),
        text_source=np.array(["symbol"] * 6),
        meta=np.array(json.dumps({"model": "test"})),
    )
    return path


PARAMS = {"size": "small", "dim": 32, "heads": 2, "epochs": 25, "lr": 3e-3, "batch_size": 64, "patience": 40}


def test_dkan_learns_saves_and_loads(sections, gene_file, tmp_path):
    cls = head_class("dkan")
    head = cls({**PARAMS, "gene_embeddings": str(gene_file)}, seed=0)
    facts = head.fit(sections[:2], [sections[2]])
    assert facts["gene_semantics"]["model"] == "test"
    pred = head.predict(sections[3])
    assert nanmean(pearson_per_gene(sections[3].targets, pred)) > 0.8
    hist = pd.DataFrame(head.history)
    assert {"mse", "distill", "clip", "w_sup", "w_clip"} <= set(hist.columns)
    np.testing.assert_allclose(hist["w_sup"] + hist["w_clip"], 1.0, atol=1e-6)
    assert hist["clip"].iloc[-1] < hist["clip"].iloc[0]  # the two paths align
    head.save(tmp_path)
    back = cls.load(tmp_path)  # the gene vectors travel in the checkpoint, not the file
    np.testing.assert_allclose(back.predict(sections[3]), pred, atol=1e-5)
    unlabelled = type(sections[3])(sections[3].sample, "P", sections[3].features, None, sections[3].genes)
    np.testing.assert_allclose(back.predict(unlabelled), pred, atol=1e-5)  # no targets needed to predict


def test_learned_queries_and_fixed_weights(sections):
    head = head_class("dkan")(
        {**PARAMS, "epochs": 3, "gene_queries": "learned", "loss_weights": "fixed", "clip_weight": 0.5}, seed=0
    )
    facts = head.fit(sections[:2], [sections[2]])
    assert facts["gene_semantics"] == {"queries": "learned"}
    assert set(pd.DataFrame(head.history)["w_clip"]) == {0.5}
    with pytest.raises(ValueError, match="gene_queries"):
        head_class("dkan")({"gene_queries": "gpt4o"})


def test_global_token_sees_the_whole_section(sections, gene_file):
    head = head_class("dkan")({**PARAMS, "epochs": 1, "gene_embeddings": str(gene_file)}, seed=0)
    head.fit(sections[:1], [])
    sec = sections[3]
    before = head.predict(sec)[0]
    other = type(sec)(sec.sample, sec.patient, sec.features.subset(np.arange(sec.n_spots)), sec.targets, sec.genes)
    other.features.local = other.features.local.copy()
    other.features.local[1:] = np.random.default_rng(2).normal(size=other.features.local[1:].shape)  # all but spot 0
    after = head.predict(other)[0]
    assert not np.allclose(before, after, atol=1e-4)
    no_global = head_class("dkan")(
        {**PARAMS, "epochs": 1, "global_layers": 0, "gene_embeddings": str(gene_file)}, seed=0
    )
    no_global.fit(sections[:1], [])
    assert np.isfinite(no_global.predict(sec)).all()


def small_cfg(**over):
    cfg = head_class("dkan").settings({"size": "small", "dim": 8, "heads": 2, "dropout": 0.0, **over})
    return cfg


@pytest.mark.parametrize(
    ("queries", "variant", "embed"),
    [("semantic", "full", (5, 6, 8)), ("learned", "full", (5, 6, 8)), ("semantic", "legacy", (5, 4))],
)
def test_dkan_network_shapes(sections, queries, variant, embed):
    cfg = small_cfg(gene_queries=queries, variant=variant, **({"clip_dim": 4} if variant == "legacy" else {}))
    dims = {"n_genes": 6, "local_dim": 16, "neighbour_tiles": 25}
    text = torch.randn(6, 12) if queries == "semantic" else None
    net = DKAN(cfg, dims, text)
    batch = make_batch(section_tensors(sections[0], "cpu"), torch.arange(5))
    assert net(batch).shape == (5, 6)
    out = net.forward_train(batch)
    n_inter = 4 if cfg["intermediates"] == "image" else 3
    assert out["pred"].shape == (5, 6) and [p.shape for p in out["intermediates"]] == [(5, 6)] * n_inter
    assert out["img_embed"].shape == out["expr_embed"].shape == embed


def test_gene_level_nt_xent_known_values():
    # one spot, two genes, orthonormal embeddings: each (spot, gene) row matches itself with cosine 1 and
    # the other gene with 0, so L = log(1 + exp(-1 / tau))
    eye = torch.eye(2)[None]  # (B=1, G=2, d=2)
    for tau in (1.0, 0.1):
        assert gene_level_nt_xent(eye, eye, tau).item() == pytest.approx(np.log1p(np.exp(-1 / tau)), rel=1e-5, abs=1e-7)
    # the expression rows swapped between the genes: each row's positive has cosine 0, a negative 1
    swapped = eye[:, [1, 0]]
    assert gene_level_nt_xent(eye, swapped, 1.0).item() == pytest.approx(np.log1p(np.exp(1.0)), rel=1e-6)
    # pairs are (spot, gene): two spots x one gene is the same problem as one spot x two genes; scale-free
    assert gene_level_nt_xent(eye.reshape(2, 1, 2), 3 * eye.reshape(2, 1, 2), 1.0).item() == pytest.approx(
        np.log1p(np.exp(-1.0)), rel=1e-6
    )
    # a hand-computed row: u = (1, 0), v_0 = (1, 0), v_1 = (0.6, 0.8); u . v = (1, 0.6), tau 0.5
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    b = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    row0 = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(1.2)))
    row1 = -np.log(np.exp(1.6) / (np.exp(0.0) + np.exp(1.6)))
    assert gene_level_nt_xent(a, b, 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_gene_level_nt_xent_chunks_give_the_same_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, 4, generator=g, requires_grad=True)
    b = torch.randn(3, 5, 4, generator=g, requires_grad=True)
    whole = gene_level_nt_xent(a, b, 0.1)
    (ga,) = torch.autograd.grad(whole, a)
    chunked = gene_level_nt_xent(a, b, 0.1, chunk=4)
    (gc,) = torch.autograd.grad(chunked, a)
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-5)
    torch.testing.assert_close(gc, ga, rtol=1e-4, atol=1e-6)


def test_adaptive_weights_with_the_codes_boost():
    w = inverse_loss_weights([torch.tensor(1.0), torch.tensor(3.0)], boost=[1.0, 3.0])
    np.testing.assert_allclose(w.numpy(), [0.5, 0.5])  # (1/1) vs (3/3)


@pytest.mark.parametrize("readout", ["shared", "per_gene"])
def test_shared_readout_sees_genes_only_through_their_embeddings(sections, readout):
    torch.manual_seed(0)
    dims = {"n_genes": 6, "local_dim": 16, "neighbour_tiles": 25}
    text = torch.randn(6, 12)
    text[1] = text[0]  # genes 0 and 1 have the same text embedding
    net = DKAN(small_cfg(readout=readout), dims, text).eval()
    batch = make_batch(section_tensors(sections[0], "cpu"), torch.arange(5))
    with torch.no_grad():
        pred = net(batch)
    if readout == "shared":
        torch.testing.assert_close(pred[:, 0], pred[:, 1])  # identical embeddings: identical predictions
        assert not torch.allclose(pred[:, 0], pred[:, 2])  # other text: another prediction
    else:  # per-gene weights tell the two genes apart without any text
        assert not torch.allclose(pred[:, 0], pred[:, 1])


def test_sizes_and_variants_resolve_in_layers():
    cls = head_class("dkan")
    published = cls.settings({})
    assert published["size"] == "published" and published["variant"] == "full"
    assert (published["dim"], published["gene_layers"], published["batch_size"], published["lr"]) == (
        1024,
        3,
        128,
        1e-4,
    )
    assert (published["contrast"], published["readout"], published["intermediates"]) == (
        "gene_nt_xent",
        "shared",
        "image",
    )
    assert (published["step_size"], published["gamma"], published["loss_weights"]) == (50, 0.9, "adaptive")
    legacy = cls.settings({"size": "legacy", "variant": "legacy"})
    assert (legacy["dim"], legacy["contrast"], legacy["readout"], legacy["clip_dim"]) == (
        256,
        "spot_clip",
        "per_gene",
        128,
    )
    assert cls.settings({"variant": "no_knowledge"})["knowledge_path"] is False
    assert cls.settings({"variant": "no_text_summary"})["gene_text"] == "symbols"
    assert cls.settings({"size": "small", "dim": 64})["dim"] == 64  # own keys win
    with pytest.raises(ValueError, match="unknown variant"):
        cls.settings({"variant": "w/o everything"})
    with pytest.raises(ValueError, match="unknown setting"):
        cls.settings({"emb_dim": 1024})
    with pytest.raises(ValueError, match="knowledge_path"):
        cls.settings({"knowledge_path": False})


@pytest.mark.parametrize("variant", ["no_knowledge", "no_contrastive", "legacy"])
def test_ablation_variants_train(sections, variant):
    head = head_class("dkan")({**PARAMS, "epochs": 2, "variant": variant, "gene_queries": "learned"}, seed=0)
    facts = head.fit(sections[:2], [sections[2]])
    assert np.isfinite(head.predict(sections[3])).all()
    hist = pd.DataFrame(head.history)
    if variant == "legacy":
        assert (hist["w_clip"] > 0).all()
    else:
        assert (hist["w_clip"] == 0).all() and (hist["clip"] == 0).all()
    if variant == "no_knowledge":
        assert facts["gene_semantics"] == {"queries": "none"}
