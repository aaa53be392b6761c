"""The encoder zoo: every card builds at its real width and runs through the embed stage's own path, its
checkpoints load strictly (round trip, SHA-256) and wrong ones fail naming the file; the layouts that are
not timm's (Virchow2's pooling, CONCH v1.5's tower, Phikon-v2's transformers keys, the truncated ResNet)."""

import json
import re

import numpy as np
import pytest
import torch

from genedml.compat import import_timm
from genedml.tiles.embed_runner import EncoderRunner, token_count
from genedml.tiles.encoder_layouts import AttentionalPooler
from genedml.tiles.encoder_zoo import ZOO, mpp_mismatch
from genedml.tiles.encoders import RANDOM_INIT, build_encoder, sha256_file, zoo_architecture

NAMES = sorted(ZOO)
# the ViTs at their real width with one block (the full ones are 0.3-1.1 B parameters); ResNets are real
SHALLOW = {name: (None if ZOO[name].timm_name.startswith("resnet") else {"depth": 1}) for name in NAMES}


def config(name, **extra):
    return {"name": name, "model_kwargs": SHALLOW[name], **extra}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Each entry random-init (seed 3) and a checkpoint saved from it, built once for the module."""
    folder = tmp_path_factory.mktemp("zoo")
    built = {}

    def get(name):
        if name not in built:
            enc = build_encoder(config(name, allow_random_init=True, init_seed=3))
            path = folder / f"{name}.bin"
            torch.save(enc.model.state_dict(), path)
            built[name] = enc, path
        return built[name]

    return get


def tile_px(card):
    """Smaller than the cards' input sizes: the ViTs take any size (dynamic_img_size), the CNNs pool globally."""
    return 64 if card.pooling == "avg" else 112


def tiles(card, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, tile_px(card), tile_px(card), 3), dtype=np.uint8)


def run(enc, pixels, tokens=False):
    """The embed stage's device path (uint8 NHWC in, normalised on the device, CPU here)."""
    runner = EncoderRunner(enc, "cpu", batch_size=len(pixels), tile_px=pixels.shape[1], tokens=tokens)
    runner.batch()[: len(pixels)] = torch.from_numpy(pixels)
    emb, tok, _ = runner.submit(len(pixels), np.ones((len(pixels), 4), np.int64))
    return emb, tok


@pytest.mark.parametrize("name", NAMES)
def test_entry_builds_runs_and_loads_its_checkpoint_strictly(name, zoo, tmp_path):
    card = ZOO[name]
    enc, path = zoo(name)
    assert enc.embed_dim == card.embed_dim and enc.weights_sha256 == RANDOM_INIT
    assert enc.mean == card.mean and enc.std == card.std
    pixels = tiles(card)
    emb, _ = run(enc, pixels)
    assert emb.shape == (2, card.embed_dim) and np.isfinite(emb).all()

    # round trip: a checkpoint of the same architecture loads strictly, its SHA-256 recorded
    loaded = build_encoder(config(name, weights=str(path), init_seed=99))
    assert loaded.weights_sha256 == sha256_file(path) and loaded.weights_path == str(path)
    np.testing.assert_allclose(run(loaded, pixels)[0], emb, rtol=1e-4, atol=1e-4)
    assert loaded.identity()["config"]["name"] == name

    # a wrong checkpoint: one key removed, one renamed; the error names the file and the keys
    state = torch.load(path, weights_only=True)
    keys = list(state)
    removed, renamed = keys[0], keys[-1]
    del state[removed]
    state[renamed + "_old"] = state.pop(renamed)
    bad = tmp_path / f"{name}-bad.bin"
    torch.save(state, bad)
    with pytest.raises(ValueError, match="do not match the architecture") as err:
        build_encoder(config(name, weights=str(bad)))
    message = str(err.value)
    assert str(bad) in message and removed in message and renamed + "_old" in message


@pytest.mark.parametrize("name", [n for n in NAMES if ZOO[n].pooling != "avg"])
def test_vit_entries_give_tokens_for_the_token_cache(name, zoo):
    card = ZOO[name]
    enc, _ = zoo(name)
    pixels = tiles(card, n=1)
    emb, tok = run(enc, pixels, tokens=True)
    np.testing.assert_allclose(emb, run(enc, pixels)[0], rtol=1e-4, atol=1e-4)
    assert tok.shape[:2] == (1, token_count(enc, tile_px(card), "cpu"))


def test_cnn_entries_have_no_token_cache(zoo):
    enc, _ = zoo("resnet50")
    with pytest.raises(ValueError, match="no token sequence"):
        token_count(enc, 64, "cpu")


@pytest.mark.parametrize("name", NAMES)
def test_full_size_architecture_has_the_cards_width(name):
    """The real depth, built without memory (meta device): the pooled output has the card's width."""
    card = ZOO[name]
    with torch.device("meta"):
        model = zoo_architecture(card)
        out = model(torch.empty(1, 3, card.input_px, card.input_px))
    assert model.num_features == card.embed_dim and tuple(out.shape) == (1, card.embed_dim)


def test_a_checkpoint_of_another_entry_is_refused(zoo):
    _, uni = zoo("uni")
    with pytest.raises(ValueError, match="of another shape") as err:
        build_encoder(config("uni2-h", weights=str(uni)))
    assert str(uni) in str(err.value)


def test_missing_weights_say_where_to_get_them(monkeypatch, zoo):
    for name, card in ZOO.items():
        monkeypatch.delenv(card.env_var, raising=False)
        with pytest.raises(FileNotFoundError) as err:
            build_encoder({"name": name})
        for fact in (card.env_var, card.url, "encoder.weights", card.weights_file):
            assert fact in str(err.value)
        assert ("gated" in str(err.value)) == card.gated
    assert ZOO["uni"].env_var == "GENEDML_UNI_WEIGHTS"
    assert ZOO["h-optimus-0"].env_var == "GENEDML_H_OPTIMUS_0_WEIGHTS"
    _, path = zoo("h-optimus-0")
    monkeypatch.setenv("GENEDML_H_OPTIMUS_0_WEIGHTS", str(path))
    assert build_encoder(config("h-optimus-0")).weights_sha256 == sha256_file(path)


def test_virchow2_embedding_is_cls_and_mean_of_patch_tokens(zoo):
    enc, _ = zoo("virchow2")
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        tokens = enc.model.forward_features(x)
        emb = enc.model(x)
    assert tokens.shape == (2, 1 + 4 + 256, 1280)  # CLS, 4 registers, 16 x 16 patches
    torch.testing.assert_close(emb[:, :1280], tokens[:, 0])
    torch.testing.assert_close(emb[:, 1280:], tokens[:, 5:].mean(dim=1))


def test_conch_pooler_is_multi_head_cross_attention():
    torch.manual_seed(0)
    pool = AttentionalPooler(dim=32, context_dim=48, heads=4, n_queries=1)
    x = torch.randn(3, 10, 48)
    q = pool.to_q(pool.ln_q(pool.query))  # (1, 32)
    k, v = pool.to_kv(pool.ln_k(x)).chunk(2, dim=-1)  # (3, 10, 32) each
    heads = []
    for h in range(4):
        s = slice(8 * h, 8 * h + 8)
        weights = torch.softmax(q[:, s] @ k[..., s].transpose(1, 2) / 8**0.5, dim=-1)  # (3, 1, 10)
        heads.append(weights @ v[..., s])
    torch.testing.assert_close(pool(x), pool.to_out(torch.cat(heads, dim=-1)))


def test_conch_checkpoint_of_another_grid_is_resampled(tmp_path):
    small = build_encoder(
        config("conch_v1_5", allow_random_init=True) | {"model_kwargs": {"depth": 1, "img_size": 224}}
    )
    path = tmp_path / "pytorch_model_vision.bin"
    torch.save(small.model.state_dict(), path)
    assert small.model.state_dict()["trunk.pos_embed"].shape == (1, 197, 1024)
    enc = build_encoder(config("conch_v1_5", weights=str(path)))  # 448 px: 1 + 28 x 28 positions
    assert enc.model.trunk.pos_embed.shape == (1, 785, 1024) and enc.weights_sha256 == sha256_file(path)
    assert set(enc.model.state_dict()) == set(small.model.state_dict())


def _hf_dinov2(image_size):
    import_timm()  # makes torchvision importable before transformers asks for it
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(5)
    cfg = Dinov2Config(
        hidden_size=1024, num_hidden_layers=1, num_attention_heads=16, patch_size=16, image_size=image_size
    )
    model = Dinov2Model(cfg).eval()
    with torch.no_grad():  # layer-scale and biases away from their init, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "lambda1" in name or name.endswith("bias"):
                p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("image_size, legacy_names", [(224, True), (448, False)])
def test_phikon_v2_transformers_checkpoint_maps_to_timm(image_size, legacy_names, tmp_path):
    """A transformers Dinov2Model file (transformers 4 or 5 attention names; its own grid or another one)
    loads strictly into the timm ViT and gives the CLS token transformers gives."""
    from safetensors.torch import save_file

    hf = _hf_dinov2(image_size)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert any(k.startswith("encoder.layer.0.attention.") for k in state)
    if legacy_names:
        rename = {
            "attention.q_proj": "attention.attention.query",
            "attention.k_proj": "attention.attention.key",
            "attention.v_proj": "attention.attention.value",
            "attention.o_proj": "attention.output.dense",
        }
        state = {re.sub("|".join(map(re.escape, rename)), lambda m: rename[m.group(0)], k): v for k, v in state.items()}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    enc = build_encoder(config("phikon-v2", weights=str(path)))
    assert enc.weights_sha256 == sha256_file(path)
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode():
        expected = hf(pixel_values=x).last_hidden_state[:, 0]
        torch.testing.assert_close(enc.model(x), expected, rtol=1e-4, atol=1e-4)


def test_resnet50_entries_load_imagenet_checkpoints_with_their_classifier(tmp_path):
    """Published ImageNet files carry fc.* (and layer4.* for the truncated entry): dropped before the load.
    The truncated network is layer3's feature map, average-pooled (1024-d)."""
    timm = import_timm()
    torch.manual_seed(1)
    full = timm.create_model("resnet50", pretrained=False, num_classes=1000).eval()
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        plain = build_encoder({"name": "resnet50", "weights": str(path)})
        torch.testing.assert_close(plain.model(x), full.forward_head(full.forward_features(x), pre_logits=True))
        trunc = build_encoder({"name": "resnet50_trunc", "weights": str(path)})
        stem = full.maxpool(full.act1(full.bn1(full.conv1(x))))
        layer3 = full.layer3(full.layer2(full.layer1(stem)))
        torch.testing.assert_close(trunc.model(x), layer3.mean(dim=(2, 3)))
    assert trunc.embed_dim == 1024 and not any(k.startswith("layer4.") for k in trunc.model.state_dict())


def test_target_mpp_far_from_native_warns():
    assert mpp_mismatch("uni", 0.5) is None and mpp_mismatch("uni", 0.6) is None
    assert "0.5 µm/px" in mpp_mismatch("uni", 1.0)
    assert mpp_mismatch("uni", None) is None  # native resolution: unknown here
    assert mpp_mismatch("resnet50", 2.0) is None  # no native resolution
    assert mpp_mismatch("resnet18", 2.0) is None  # not in the zoo


def test_widths_are_the_cards_and_the_cli_lists_the_zoo(capsys):
    from genedml.cli import main
    from genedml.pipeline.cost import KNOWN_WIDTHS
    from genedml.tiles.encoders import REGISTRY

    assert all(KNOWN_WIDTHS[name] == card.embed_dim for name, card in ZOO.items())
    assert KNOWN_WIDTHS["resnet18"] == 512 and set(ZOO) <= set(REGISTRY)
    assert main(["encoders", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(ZOO)
    virchow2 = next(r for r in rows if r["name"] == "virchow2")
    assert virchow2["embed_dim"] == 2560 and virchow2["env_var"] == "GENEDML_VIRCHOW2_WEIGHTS"
    assert all(r["sha256"] is None for r in rows)  # no publisher of these publishes one
    assert main(["encoders"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["name", "architecture", "dim"]
    assert all(name in table for name in ZOO)


def test_the_planner_reads_a_zoo_encoders_weights_variable(monkeypatch, tmp_path):
    from genedml.pipeline.checks import encoder_weights, missing_files

    config = {"encoder": {"name": "virchow2"}}
    monkeypatch.delenv("GENEDML_VIRCHOW2_WEIGHTS", raising=False)
    assert encoder_weights(config) is None
    monkeypatch.setenv("GENEDML_VIRCHOW2_WEIGHTS", str(tmp_path / "nope.bin"))
    assert encoder_weights(config) == str(tmp_path / "nope.bin")
    assert any("$GENEDML_VIRCHOW2_WEIGHTS" in p for p in missing_files(config, {}))
    assert encoder_weights({"encoder": {"name": "resnet18"}}) is None  # not in the zoo: no variable
