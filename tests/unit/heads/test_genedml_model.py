"""The Gene-DML and TRIPLEX networks, their losses and presets, with known answers (tiny sizes)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genedml.heads import Section, head_class
from genedml.heads.presets import GENEDML_SIZES
from genedml.heads.torch_head import make_batch, section_tensors
from genedml.networks import losses
from genedml.networks.context import GlobalEncoder, NeighbourEncoder, grid_positions
from genedml.tiles.features import SampleFeatures
from support.sections import TINY_GENEDML

TINY = {
    **TINY_GENEDML,
    "neighbour_dropout": 0.0,
    "global_dropout": 0.0,
    "fusion_dropout": 0.0,
    "gene_dropout": 0.0,
    "predictor_dropout": 0.0,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_section(name, rng, n=40, d=12, g=5, masked=0.2):
    cells = np.array([(r, c) for r in range(12) for c in range(12)])
    rc = cells[rng.choice(len(cells), n, replace=False)]
    local = rng.normal(size=(n, d)).astype(np.float32)
    mask = rng.random((n, 25)) > masked
    mask[:, 12] = True
    neigh = (local[:, None] + 0.5 * rng.normal(size=(n, 25, d))).astype(np.float32)
    neigh[~mask] = 0
    f = SampleFeatures(
        name,
        local,
        neigh,
        mask,
        np.array([f"{name}-{i}" for i in range(n)]),
        rc[:, ::-1] * 100.0,
        rc.astype(np.int32),
        {},
    )
    y = (np.tanh(local[:, :g]) + 0.1 * rng.normal(size=(n, g))).astype(np.float32)
    return Section(name, "P" + name, f, y, [f"g{i}" for i in range(g)])


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    return [toy_section(f"s{i}", rng) for i in range(3)]


def built(kind, params, sections):
    torch.manual_seed(0)
    head = head_class(kind)(params, seed=0)
    head.dims = {"local_dim": 12, "neighbour_tiles": 25, "n_genes": 5, "local_tokens": 1}
    head.model = head.build_model(head.dims)
    return head


# --- losses ----------------------------------------------------------------------------------------


def test_soft_target_loss_with_identity_targets_is_the_clip_loss():
    torch.manual_seed(0)
    img, gene = F.normalize(torch.randn(9, 8), dim=-1), F.normalize(torch.randn(9, 8), dim=-1)
    eye = torch.eye(9)
    assert losses.soft_target_loss(img, gene, 0.07, targets=eye) == pytest.approx(
        float(losses.clip_loss(img, gene, 0.07)), rel=1e-6
    )
    # BLEEP soft targets: rows are distributions; identical modalities give the identity-like limit
    t = losses.bleep_targets(img, gene, 0.07)
    torch.testing.assert_close(t.sum(1), torch.ones(9))
    assert float(losses.soft_target_loss(img, gene, 0.07)) != pytest.approx(float(losses.clip_loss(img, gene, 0.07)))


def test_multi_scale_instance_loss_is_the_mean_over_scales():
    torch.manual_seed(1)
    gene = F.normalize(torch.randn(6, 4), dim=-1)
    scales = {s: F.normalize(torch.randn(6, 4), dim=-1) for s in ("local", "neighbour", "global")}
    each = [float(losses.soft_target_loss(v, gene, 0.1)) for v in scales.values()]
    assert float(losses.multi_scale_instance_loss(scales, gene, 0.1)) == pytest.approx(np.mean(each), rel=1e-6)


@pytest.mark.parametrize("init,interleave", [("farthest", True), ("farthest", False)])
def test_kmeans_recovers_well_separated_clusters(init, interleave):
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0], [-10.0, 0, 0]])
    truth = np.tile(np.arange(4), 15) if interleave else rng.permutation(np.repeat(np.arange(4), 15))
    x = torch.tensor(centres[truth] + rng.normal(scale=0.3, size=(60, 3)), dtype=torch.float32)
    labels, c = losses.kmeans(x, 4, iters=10, init=init)
    labels = labels.numpy()
    # same partition up to renaming: every true cluster maps to exactly one label and vice versa
    pairs = set(zip(truth.tolist(), labels.tolist()))
    assert len(pairs) == 4 and len({a for a, _ in pairs}) == 4 and len({b for _, b in pairs}) == 4
    for t, lab in pairs:
        np.testing.assert_allclose(c[lab].numpy(), centres[t], atol=0.3)


def test_kmeans_centroids_carry_gradients_and_empty_groups_keep_their_seed():
    x = torch.tensor([[0.0, 0], [0.1, 0], [5, 5], [5.1, 5]], requires_grad=True)
    torch.manual_seed(0)
    labels, c = losses.kmeans(x, 3, iters=5, init="random")  # 3 seeds for 2 clusters: one ends up empty or shared
    c.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.isfinite(c).all()


def test_random_kmeans_centroids_are_the_means_of_their_groups():
    torch.manual_seed(0)
    x = torch.randn(50, 4)
    labels, c = losses.kmeans(x, 5, iters=10, init="random")
    for g in labels.unique():
        torch.testing.assert_close(c[g], x[labels == g].mean(0))


def test_kmeans_seeds_of_a_mixed_batch_come_from_several_sections():
    """A mixed batch lists its rows section by section; the seeds must still be spread over the batch."""
    from genedml.heads import head_class
    from support.sections import synthetic_section

    rng = np.random.default_rng(0)
    sections = [synthetic_section(f"s{i}", rng, rng.normal(size=(16, 6))) for i in range(4)]
    head = head_class("stnet")({"epochs": 1}, seed=0)
    from genedml.heads.torch_head import section_tensors

    tensors = [section_tensors(s, "cpu") for s in sections]
    batch = next(head._batches(tensors, np.random.default_rng(1), True, 96, mixed=True))
    owner = np.concatenate([np.full(len(rows), st.sample, dtype=object) for st, rows in batch.groups])
    assert len(set(owner)) == 4 and len(set(owner[:18])) == 1  # the first 18 rows: one section
    torch.manual_seed(0)
    seeds = losses.kmeans_seeds(batch.local, 18, "random").numpy()
    assert len(set(seeds.tolist())) == 18 and len(set(owner[seeds])) > 1


def test_grouping_none_makes_every_instance_its_own_group():
    x = torch.randn(5, 3)
    labels, c = losses.group(x, 2, method="none")
    assert labels.tolist() == [0, 1, 2, 3, 4] and torch.equal(c, x)


def test_instance_group_loss_prefers_matching_groups():
    """Queries next to the centroid of their own group give a lower loss than the same queries shuffled."""
    c = F.normalize(torch.eye(3), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    q = c[labels]
    good = losses.instance_group_loss(q, q, (labels, c), (labels, c), 0.1)
    bad = losses.instance_group_loss(q, q, (labels.roll(1), c), (labels.roll(1), c), 0.1)
    assert float(good) < 0.01 < float(bad)


def test_self_distillation_known_values():
    y = torch.zeros(4, 2)
    fused = torch.ones(4, 2)
    scale = {"local": torch.full((4, 2), 3.0)}
    total, parts = losses.self_distillation_loss(fused, scale, y, alpha=0.3)
    # 1 + 0.7 * 9 + 0.3 * (3 - 1)^2
    assert float(total) == pytest.approx(1 + 0.7 * 9 + 0.3 * 4)
    assert set(parts) == {"mse_fused", "mse_local", "distill_local"}


# --- encoders --------------------------------------------------------------------------------------


def test_masked_neighbour_tiles_change_nothing(toy):
    torch.manual_seed(0)
    enc = NeighbourEncoder(8, depth=2, heads=2, mlp=16).eval()
    tiles = torch.randn(3, 25, 8)
    mask = torch.rand(3, 25) > 0.4
    mask[:, 12] = True
    noisy = tiles.clone()
    noisy[~mask] = 100 * torch.randn(int((~mask).sum()), 8)
    a, b = enc(tiles, mask), enc(noisy, mask)
    torch.testing.assert_close(a[mask], b[mask])
    for kind, params in [
        ("genedml", TINY),
        ("triplex", {k: v for k, v in TINY.items() if k in ("encoder_dim", "epochs")}),
    ]:
        head = built(kind, params, toy)
        head.model.eval()
        st = section_tensors(toy[0], "cpu")
        batch = make_batch(st, torch.arange(10))
        ref = head.model(batch)
        st.neighbour[~st.neighbour_mask] = 50.0  # garbage where tiles are outside the image
        torch.testing.assert_close(head.model(make_batch(st, torch.arange(10))), ref)


def test_relative_position_bias_depends_on_grid_offsets_only():
    enc = NeighbourEncoder(8, depth=1, heads=2, mlp=8)
    attn = enc.layers.layers[0][1]
    idx = attn.rel_index
    assert idx.shape == (25, 25) and idx.unique().numel() == 25 and torch.equal(idx, idx.T)
    # cells (0,0)-(1,2) and (3,3)-(4,1) are both |1|,|2| apart: same bias entry
    assert idx[0 * 5 + 0, 1 * 5 + 2] == idx[3 * 5 + 3, 4 * 5 + 1]


def test_global_encoder_follows_spot_order():
    torch.manual_seed(0)
    enc = GlobalEncoder(8, depth=2, heads=2, mlp=16).eval()
    x = torch.randn(30, 8)
    coords = torch.tensor(np.array([(r, c) for r in range(6) for c in range(5)]), dtype=torch.long)
    perm = torch.randperm(30)
    out, out_perm = enc(x, coords), enc(x[perm], coords[perm])
    torch.testing.assert_close(out[perm], out_perm, rtol=1e-5, atol=1e-5)
    # the grid convolution sees positions: moving the spots around the grid changes the output
    assert not torch.allclose(enc(x, coords.flip(0)), out, atol=1e-4)


def test_grid_positions_fall_back_to_pixel_centres_when_array_coords_are_missing():
    spatial = np.array([[0, 0], [200, 0], [0, 200], [200, 200]], float)
    pos = grid_positions(np.full((4, 2), -1), spatial)
    assert sorted(map(tuple, pos.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    good = np.array([[3, 4], [3, 5], [4, 4], [4, 5]])
    np.testing.assert_array_equal(grid_positions(good, spatial), good)


# --- the heads -------------------------------------------------------------------------------------


def test_instance_group_loss_gradients_reach_the_encoders(toy):
    head = built("genedml", {**TINY, "w_ins": 0.0, "w_pred": 0.0}, toy)
    model = head.model.train()
    st = section_tensors(toy[0], "cpu")
    batch = make_batch(st, torch.arange(24))
    gene = F.normalize(model.encode_gene(batch.targets), dim=-1)
    loss = head._instance_group(model, model.encode_image(batch)["fused"], gene)
    loss.backward()
    for name in ("image.neighbour", "image.global_", "image.input_proj", "project", "fusion", "gene", "group_proj"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_presets_and_ablation_switches():
    cls = head_class("genedml")
    paper, code = cls({}).params, cls({"preset": "reference_code"}).params
    assert (paper["lambda_ig"], paper["tau_ig"], paper["ig_queries"]) == (0.8, 0.07, "instance")
    assert (code["lambda_ig"], code["tau_ig"], code["ig_queries"]) == (1.0, 0.1, "raw")
    assert (code["pool"], code["standardise_inputs"], paper["pool"], paper["standardise_inputs"]) == (
        "tokens",
        False,
        "scales",
        True,
    )
    assert paper["size"] == "small" and paper["encoder_dim"] == GENEDML_SIZES["small"]["encoder_dim"]
    assert paper["batch_size"] == GENEDML_SIZES["small"]["batch_size"]  # the CPU size keeps its budget
    # paper-sized: the paper's text trains with batch 256, the code with the size's (512 / 512 / 256)
    her2st = cls({"size": "her2st"}).params
    assert (her2st["k"], her2st["batch_size"], her2st["global_depth"], her2st["encoder_dim"]) == (18, 256, 5, None)
    assert cls({"size": "her2st", "preset": "reference_code"}).params["batch_size"] == 512
    assert cls({"size": "cscc", "preset": "reference_code"}).params["batch_size"] == 256
    # Table 3's rows: the global encoder is off where the paper marks it off
    rows = {v: cls({"variant": v}).params for v in ("plain", "multiscale", "groups", "no-global", "no-grouping")}
    assert [rows[v]["use_global"] for v in rows] == [False, True, False, False, True]
    assert [rows[v]["lambda_ig"] > 0 for v in rows] == [False, False, True, True, True]
    assert rows["plain"]["instance_scales"] == rows["groups"]["instance_scales"] == ["fused"]
    assert rows["no-grouping"]["grouping"] == "none"
    assert cls({"variant": "no-group-projection"}).params["group_projection"] is False
    assert cls({"variant": "groups", "lambda_ig": 0.5}).params["lambda_ig"] == 0.5  # own keys win
    with pytest.raises(ValueError, match="unknown setting"):
        cls({"lamda_ig": 1})
    with pytest.raises(ValueError, match="variant"):
        cls({"variant": "nope"})


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"preset": "reference_code", "grouping": "spectral", "pool": "tokens"},
        {"variant": "no-global", "batching": "section"},
        {"variant": "mse-only"},
        {"variant": "no-group-projection", "ig_queries": "projected"},
    ],
)
def test_genedml_trains_saves_and_reloads(toy, tmp_path, params):
    cls = head_class("genedml")
    head = cls({**TINY, **params}, seed=0)
    facts = head.fit(toy[:2], [toy[2]])
    assert facts["epochs_run"] == 2 and facts["n_params"] > 0
    cols = set(head.history[0])
    assert {"loss", "mse", "selection_pcc"} <= cols
    if params.get("variant") != "mse-only":
        assert {"instance", "instance_group"} <= cols
    pred = head.predict(toy[2])
    assert pred.shape == toy[2].targets.shape and np.isfinite(pred).all()
    head.save(tmp_path)
    back = cls.load(tmp_path)
    np.testing.assert_allclose(back.predict(toy[2]), pred, atol=1e-5)


def test_triplex_trains_with_distillation_terms(toy, tmp_path):
    cls = head_class("triplex")
    for fusion in ("cross", "self"):
        head = cls({"encoder_dim": 16, "epochs": 2, "batch_size": 32, "fusion": fusion}, seed=0)
        head.fit(toy[:2], [toy[2]])
        assert {"mse_fused", "mse_local", "distill_neighbour", "distill_global"} <= set(head.history[0])
    head.save(tmp_path)
    np.testing.assert_allclose(cls.load(tmp_path).predict(toy[2]), head.predict(toy[2]), atol=1e-5)


def test_mixed_batches_cover_every_spot_once_and_keep_rows_with_their_section(toy):
    head = built("genedml", TINY, toy)
    sts = [section_tensors(s, "cpu") for s in toy]
    seen = []
    for batch in head._batches(sts, np.random.default_rng(0), True, 16, mixed=True):
        assert batch.size <= 16
        offset = 0
        for st, rows in batch.groups:
            torch.testing.assert_close(batch.local[offset : offset + len(rows)], st.local[rows])
            seen += [(st.sample, int(r)) for r in rows]
            offset += len(rows)
    assert sorted(seen) == sorted((st.sample, i) for st in sts for i in range(st.n_spots))


def test_local_token_maps_are_used_when_the_features_carry_them(toy):
    rng = np.random.default_rng(1)
    for s in toy:
        s.features.local_tokens = rng.normal(size=(s.n_spots, 5, 12)).astype(np.float16)
    head = head_class("genedml")({**TINY, "epochs": 1}, seed=0)
    head.fit(toy[:2], [toy[2]])
    batch = make_batch(section_tensors(toy[2], "cpu"), torch.arange(4))
    assert head.model.image.local_tokens(batch).shape == (4, 5, 16)
    cls_only = head_class("genedml")({**TINY, "epochs": 1, "local_input": "cls"}, seed=0)
    cls_only.fit(toy[:2], [toy[2]])
    assert cls_only.model.image.local_tokens(batch).shape == (4, 1, 16)
