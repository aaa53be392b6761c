"""What the run plan makes a head's train jobs read: gene texts and spot images, from its resolved settings."""

import yaml

from genedml.pipeline.plan import GENE_SEMANTICS, RunPlan
from genedml.pipeline.schema import resolved_config
from support.workflow import REPO

HEADS = {
    "dkan_full": {"type": "dkan", "size": "small"},
    "dkan_symbols": {"type": "dkan", "size": "small", "variant": "no_text_summary"},
    "dkan_no_knowledge": {"type": "dkan", "size": "small", "variant": "no_knowledge"},
    "dkan_learned": {"type": "dkan", "size": "small", "gene_queries": "learned"},
    "triplex_pixels": {"type": "triplex", "spot_encoder": "resnet18", "spot_encoder_weights": "w/resnet18.pt"},
    "triplex": {"type": "triplex"},
}


def plan(tmp_path) -> RunPlan:
    # a file a setting names must exist when the run is planned
    weights = tmp_path / "w" / "resnet18.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    heads = {**HEADS, "triplex_pixels": {**HEADS["triplex_pixels"], "spot_encoder_weights": str(weights)}}
    overlay = tmp_path / "heads.yaml"
    overlay.write_text(yaml.safe_dump({"heads": heads, "run_heads": list(heads)}))
    return RunPlan(yaml.safe_load(resolved_config([str(REPO / "config.yaml"), str(overlay)])))


def test_only_heads_that_read_gene_texts_get_the_semantics_file(tmp_path):
    run = plan(tmp_path)
    assert run.gene_semantics_file("dkan_full") == GENE_SEMANTICS
    for head in ("dkan_symbols", "dkan_no_knowledge", "dkan_learned", "triplex"):
        assert run.gene_semantics_file(head) == "", head


def test_only_pixel_heads_read_spot_images_and_their_weights(tmp_path):
    run = plan(tmp_path)
    assert run.spot_image_inputs("triplex_pixels") == [run.spot_images_path(s) for s in run.samples]
    assert run.spot_encoder_weights("triplex_pixels") == [str(tmp_path / "w" / "resnet18.pt")]
    assert run.spot_image_flag("triplex_pixels").startswith("--spot-images ")
    for head in ("triplex", "dkan_full"):
        assert run.spot_image_inputs(head) == [] and run.spot_encoder_weights(head) == []
        assert run.spot_image_flag(head) == ""
