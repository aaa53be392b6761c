"""``genedml``: one subcommand per pipeline stage. Every Snakemake rule calls one of these.

Each subcommand is written as one pair: its arguments and, right below, its handler. Input and output
paths are spelled out by hand; a stage's settings are never retyped here: their flags, defaults and
allowed values are generated from the config schema through the stage's spec (``TileSpec.add_arguments``,
``TileSpec.from_args``), so `genedml tile --help` lists exactly the keys of the config's ``tiles`` section.
The handlers only turn arguments into calls: the work is done in the module each one imports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from genedml import __version__
from genedml.errors import InputError

log = logging.getLogger("genedml")

SUBCOMMANDS: list[tuple[str, str, object, object]] = []  # (name, help, add arguments, handler)


def subcommand(name: str, help: str, arguments):
    """Register ``handler`` as ``genedml <name>``, with ``arguments(parser)`` defining its arguments."""

    def register(handler):
        SUBCOMMANDS.append((name, help, arguments, handler))
        return handler

    return register


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _sample_paths(pairs: list[str]) -> dict:
    """``["S1=a.zarr", "S2=b.zarr"]`` -> ``{"S1": "a.zarr", "S2": "b.zarr"}``."""
    return {sample: path for sample, _, path in (p.partition("=") for p in pairs)}


def _passive_openmp_waits() -> None:
    """Let idle OpenMP threads sleep instead of spinning (must run before torch is imported). Training
    runs many small ops; on a machine where other processes also run, spinning threads wait for each
    other: one HER2ST fold of the genedml head took 309 s with 2 spinning threads, 42 s with
    OMP_WAIT_POLICY=PASSIVE, 28 s with one thread (docs/heads.md). A user's setting wins."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _set_threads(threads: int | None) -> None:
    """``threads`` compute threads (the rule's ``threads:``). Before torch is imported, through
    OMP_NUM_THREADS, which torch and the BLAS behind numpy read when they load: a job that never needs
    torch (a ridge head) no longer imports it just to set this (2 s a job)."""
    if not threads:
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def _spec_from_args(spec_class, a, sample=None):
    """The stage's spec from its generated flags; a value the schema refuses is a clear input error."""
    try:
        return spec_class.from_args(a)
    except ValueError as exc:
        raise InputError(f"{spec_class.section} settings: {exc}", sample) from exc


# ------------------------------------------------------------------------------------------------ input


def _demo_data_args(s):
    from genedml.io.demo import DemoSpec

    s.add_argument("--sample", required=True)
    s.add_argument("--patient", required=True)
    s.add_argument("--out-dir", required=True, help="HEST-layout folder to write wsis/, st/, metadata/ into")
    DemoSpec.add_arguments(s)


@subcommand("demo-data", "write one synthetic section in the HEST-1k layout", _demo_data_args)
def demo_data(a):
    from genedml.io.demo import DemoSpec, make_section

    make_section(a.sample, a.patient, a.out_dir, _spec_from_args(DemoSpec, a, a.sample))


def _import_st_args(s):
    from genedml.io.legacy_st import ImportSpec

    s.add_argument("--st-dir", help="legacy-ST folder holding ST-cnts/, ST-spotfiles/, ST-imgs/")
    s.add_argument("--section", help="section name in the legacy files (e.g. B4); default: --sample")
    s.add_argument("--counts", help="ST-cnts/{section}.tsv.gz (instead of --st-dir)")
    s.add_argument("--spots", help="ST-spotfiles/{section}_selection.tsv (instead of --st-dir)")
    s.add_argument("--image", help="the full-resolution H&E JPEG (instead of --st-dir)")
    s.add_argument("--sample", help="name of the sample in the output (default: the section name)")
    s.add_argument("--out-dir", required=True, help="HEST-layout folder to write wsis/, st/, metadata/ into")
    s.add_argument("--patient")
    s.add_argument("--dataset")
    s.add_argument("--mpp", type=float, help="µm per pixel of the image; default: estimated from the spot pitch")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ImportSpec.add_arguments(s)


@subcommand(
    "import-st", "convert a legacy-ST section (ST-cnts, ST-spotfiles, ST-imgs) to the HEST layout", _import_st_args
)
def import_st(a):
    from genedml.io.legacy_st import ImportSpec, LegacyFiles, import_section

    section = a.section or a.sample
    if a.counts or a.spots or a.image:
        if not (a.counts and a.spots and a.image):
            raise InputError("give all of --counts, --spots and --image, or --st-dir with --section", section)
        files = LegacyFiles(section, Path(a.counts), Path(a.spots), Path(a.image))
    else:
        if not a.st_dir:
            raise InputError("give --st-dir (a legacy-ST folder) or --counts, --spots and --image", section)
        files = LegacyFiles.find(a.st_dir, section)
    import_section(
        files,
        a.out_dir,
        _spec_from_args(ImportSpec, a, section),
        sample=a.sample or section,
        patient=a.patient,
        dataset=a.dataset,
        mpp=a.mpp,
        overwrite=a.overwrite,
    )


def _import_spaceranger_args(s):
    from genedml.io.spaceranger import SpaceRangerSpec

    s.add_argument("--sample", required=True, help="name of the sample in the output")
    s.add_argument("--outs", required=True, help="the outs/ folder of `spaceranger count`")
    s.add_argument("--image", required=True, help="the full-resolution H&E image given to Space Ranger")
    s.add_argument("--out-dir", required=True, help="HEST-layout folder to write wsis/, st/, metadata/ into")
    s.add_argument("--patient", default="")
    s.add_argument("--dataset", default="")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    SpaceRangerSpec.add_arguments(s)


@subcommand(
    "import-spaceranger",
    "convert a Space Ranger Visium sample (outs/ + image) to the HEST layout",
    _import_spaceranger_args,
)
def import_spaceranger(a):
    from genedml.io.spaceranger import SpaceRangerFiles, SpaceRangerSpec
    from genedml.io.spaceranger import import_spaceranger as convert

    spec = _spec_from_args(SpaceRangerSpec, a, a.sample)
    convert(
        SpaceRangerFiles.find(a.outs, a.image, a.sample, spec.hd_bin_um),
        a.out_dir,
        a.sample,
        spec,
        patient=a.patient,
        dataset=a.dataset,
        overwrite=a.overwrite,
    )


def _virtual_spots_args(s):
    from genedml.tiles.lattice import LatticeSpec
    from genedml.tiles.tissue import TissueSpec

    s.add_argument("--sample", required=True, help="name of the sample in the outputs")
    s.add_argument("--slide", required=True, help="the bare H&E slide (pyramidal TIFF, SVS, ...)")
    s.add_argument(
        "--training-metadata",
        help="a training sample's metadata JSON: its st_technology is what --technology auto (the default) means",
    )
    s.add_argument("--mpp", type=float, help="µm per level-0 pixel; default: the slide's own (openslide.mpp-x)")
    s.add_argument("--out-st", required=True, help="the positions-only .h5ad (st/{sample}.h5ad)")
    s.add_argument("--out-metadata", required=True, help="the metadata JSON (metadata/{sample}.json)")
    s.add_argument("--out-qc", required=True, help="QC PNG: thumbnail, tissue outline and virtual spots")
    TissueSpec.add_arguments(s)
    LatticeSpec.add_arguments(s)  # --technology among them


@subcommand(
    "virtual-spots",
    "a bare H&E slide as a positions-only sample: tissue mask and a lattice of virtual spots on it",
    _virtual_spots_args,
)
def virtual_spots(a):
    from genedml.io.bare_slide import import_bare_slide
    from genedml.io.hest import load_metadata
    from genedml.tiles.lattice import LatticeSpec, technology_of_metadata
    from genedml.tiles.tissue import TissueSpec

    lattice = _spec_from_args(LatticeSpec, a, a.sample)
    technology = lattice.technology
    if technology == "auto":
        if not a.training_metadata:
            raise InputError("--technology auto needs --training-metadata (or give visium, st or custom)", a.sample)
        training = load_metadata(a.training_metadata, a.sample)
        technology = technology_of_metadata(training, a.sample, a.training_metadata)
    import_bare_slide(
        a.slide,
        a.sample,
        a.out_st,
        a.out_metadata,
        a.out_qc,
        _spec_from_args(TissueSpec, a, a.sample),
        lattice,
        technology,
        mpp=a.mpp,
    )


def _sample_sheet_args(s):
    s.add_argument("--dataset", required=True)
    s.add_argument("--samples", nargs="*", help="HEST ids or section names (default: all found in --data-dir)")
    s.add_argument(
        "--source",
        default="hest",
        choices=["hest", "legacy_st"],
        help="how the data folder names samples: HEST ids (hest) or section names (legacy_st)",
    )
    s.add_argument("--data-dir", help="HEST-1k or legacy-ST folder; only samples present there are listed")
    s.add_argument("--out", required=True)


@subcommand("sample-sheet", "sample sheet of a known dataset (her2st, stnet, cscc)", _sample_sheet_args)
def sample_sheet(a):
    from genedml.atomic import write_tsv
    from genedml.io.sample_sheet import registry_sheet, sample_naming, samples_present

    available = samples_present(a.source, a.data_dir) if a.data_dir else None
    sheet = registry_sheet(a.dataset, a.samples or None, sample_naming(a.source), available)
    write_tsv(a.out, sheet)
    log.info(
        "%s: %d samples from %d patients: %s",
        a.dataset,
        len(sheet),
        sheet["patient"].nunique(),
        ", ".join(sheet["sample"]),
    )


# ----------------------------------------------------------------------------------------- tiles, embed


def _tile_args(s):
    from genedml.io.hest import SpotFilterSpec
    from genedml.tiles.geometry import TileSpec

    s.add_argument("--sample", required=True)
    s.add_argument("--hest-dir", help="HEST-1k style folder (wsis/, st/, metadata/)")
    s.add_argument("--slide")
    s.add_argument("--st")
    s.add_argument("--metadata")
    s.add_argument("--out", required=True)
    TileSpec.add_arguments(s)
    SpotFilterSpec.add_arguments(s)


@subcommand("tile", "spot geometry: local crops and neighbour tiles on the slide", _tile_args)
def tile(a):
    from genedml.io.hest import SamplePaths, SpotFilterSpec
    from genedml.tiles.geometry import TileSpec, tile_sample

    paths = (
        SamplePaths(a.sample, Path(a.slide), Path(a.st), Path(a.metadata))
        if a.slide
        else SamplePaths.in_hest_dir(a.hest_dir, a.sample)
    )
    g = tile_sample(paths, _spec_from_args(TileSpec, a, a.sample), a.out, _spec_from_args(SpotFilterSpec, a, a.sample))
    log.info(
        "%s: %d spots, slide %.4f µm/px (%s), scale %.3f level-0 px per tile px, %d of %d neighbour tiles in image",
        a.sample,
        g.n_spots,
        g.slide_mpp,
        g.mpp_source,
        g.scale,
        int(g.neighbour_mask.sum()),
        g.neighbour_mask.size,
    )
    log.info("%s: %s", a.sample, json.dumps(g.summary()))


def _embed_args(s):
    from genedml.tiles.encoders import EmbedRuntime, EncoderSpec

    s.add_argument("--geometry", required=True)
    s.add_argument("--slide", help="slide path (defaults to the one recorded in the geometry)")
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=None)
    EncoderSpec.add_arguments(s)
    EmbedRuntime.add_arguments(s)


@subcommand("embed", "embed local and neighbour tiles with a frozen encoder into Zarr", _embed_args)
def embed(a):
    from genedml.tiles.embed import embed_sample
    from genedml.tiles.encoders import EmbedRuntime, EncoderSpec, build_encoder
    from genedml.tiles.geometry import Geometry

    _set_threads(a.threads)
    geometry = Geometry.load(a.geometry)
    if a.slide:
        geometry.slide_path = a.slide
    runtime = _spec_from_args(EmbedRuntime, a, geometry.sample)
    encoder = build_encoder(_spec_from_args(EncoderSpec, a, geometry.sample))
    from genedml.tiles.encoder_zoo import mpp_mismatch

    if warning := mpp_mismatch(encoder.name, geometry.spec.target_mpp):
        log.warning("%s: %s", geometry.sample, warning)
    embed_sample(
        geometry, encoder, a.out, batch_size=runtime.batch_size, num_workers=runtime.num_workers, device=runtime.device
    )


def _encoders_args(s):
    s.add_argument("--json", action="store_true", help="every card's facts as JSON instead of the table")


@subcommand("encoders", "the encoder zoo: architecture, width, µm/px, licence, weights of each", _encoders_args)
def encoders(a):
    from genedml.tiles.encoder_zoo import ZOO, format_table

    if a.json:
        print(json.dumps([card.row() for card in ZOO.values()], indent=2, ensure_ascii=False))
    else:
        print(format_table())


def _spot_images_args(s):
    from genedml.tiles.spot_images import SpotImageSpec

    s.add_argument("--geometry", required=True)
    s.add_argument("--slide", help="slide path (defaults to the one recorded in the geometry)")
    s.add_argument("--out", required=True)
    SpotImageSpec.add_arguments(s)


@subcommand(
    "spot-images",
    "cache every spot's local crop as uint8 pixels (heads with a trainable image encoder)",
    _spot_images_args,
)
def spot_images(a):
    from genedml.tiles.geometry import Geometry
    from genedml.tiles.spot_images import SpotImageSpec, write_spot_images

    geometry = Geometry.load(a.geometry)
    if a.slide:
        geometry.slide_path = a.slide
    write_spot_images(geometry, _spec_from_args(SpotImageSpec, a, geometry.sample), a.out)


# ------------------------------------------------------------------------------- genes, targets, folds


def _genes_args(s):
    from genedml.io.hest import SpotFilterSpec
    from genedml.study.genes import GeneSpec

    s.add_argument("--st", nargs="+", required=True)
    s.add_argument("--samples", nargs="*")
    s.add_argument("--out", required=True)
    GeneSpec.add_arguments(s)
    SpotFilterSpec.add_arguments(s)


@subcommand("genes", "choose the genes to predict", _genes_args)
def genes(a):
    from genedml.atomic import write_tsv
    from genedml.io.hest import SpotFilterSpec
    from genedml.study.genes import GeneSpec, select_genes

    spec = _spec_from_args(GeneSpec, a)
    st = dict(zip(a.samples, a.st)) if a.samples else {Path(p).stem: p for p in a.st}
    chosen, table = select_genes(st, spec, _spec_from_args(SpotFilterSpec, a))
    write_tsv(a.out, table)
    log.info(
        "%d genes chosen (%s) from %d samples",
        len(chosen),
        "list " + spec.list if spec.list else f"top by {spec.rank.replace('_', ' ')}",
        len(st),
    )


def _targets_args(s):
    from genedml.io.hest import SpotFilterSpec
    from genedml.study.targets import TargetSpec

    s.add_argument("--sample", required=True)
    s.add_argument("--st", required=True)
    s.add_argument("--genes", required=True)
    s.add_argument("--out", required=True)
    TargetSpec.add_arguments(s)
    SpotFilterSpec.add_arguments(s)


@subcommand("targets", "regression targets of one sample", _targets_args)
def targets(a):
    import pandas as pd

    from genedml.io.hest import SpotFilterSpec
    from genedml.study.targets import TargetSpec, build_sample_targets

    spec = _spec_from_args(TargetSpec, a, a.sample)
    chosen = pd.read_csv(a.genes, sep="\t")["gene"].tolist()
    build_sample_targets(a.st, a.sample, chosen, spec, a.out, spots=_spec_from_args(SpotFilterSpec, a, a.sample))
    log.info("%s: %s targets (neighbours %s) for %d genes", a.sample, spec.recipe, spec.neighbours, len(chosen))


def _gene_semantics_args(s):
    from genedml.study.gene_semantics import GeneSemanticsSpec

    s.add_argument("--genes", required=True, help="genes.tsv from `genedml genes`")
    s.add_argument("--out", required=True, help="output .npz")
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=None)
    GeneSemanticsSpec.add_arguments(s)


@subcommand("gene-semantics", "embed the predicted genes' symbols or descriptions (offline)", _gene_semantics_args)
def gene_semantics(a):
    import pandas as pd

    from genedml.study.gene_semantics import GeneSemanticsSpec, write_gene_semantics

    _set_threads(a.threads)
    chosen = pd.read_csv(a.genes, sep="\t")["gene"].astype(str).tolist()
    write_gene_semantics(a.out, chosen, _spec_from_args(GeneSemanticsSpec, a), device=a.device)


def _folds_args(s):
    from genedml.study.folds import FoldSpec

    s.add_argument("--sheet", required=True)
    s.add_argument("--out", required=True)
    s.add_argument(
        "--dataset",
        help="scheme reference: the dataset whose published folds to use (default: the sample sheet's dataset column)",
    )
    FoldSpec.add_arguments(s)


@subcommand("folds", "patient-grouped cross-validation folds from a sample sheet", _folds_args)
def folds(a):
    from genedml.atomic import write_tsv
    from genedml.io.sample_sheet import read_sample_sheet
    from genedml.study.folds import FoldSpec, plan_folds

    table = plan_folds(read_sample_sheet(a.sheet), _spec_from_args(FoldSpec, a), a.dataset)
    write_tsv(a.out, table)
    for k, grp in table.groupby("fold"):
        log.info(
            "fold %d: test %s | val %s",
            k,
            ",".join(grp.loc[grp.split == "test", "sample"]),
            ",".join(grp.loc[grp.split == "val", "sample"]) or "-",
        )


# ------------------------------------------------------------------------------------- heads: train, predict


def _train_args(s):
    s.add_argument("--head", required=True)
    s.add_argument(
        "--params",
        type=_json_arg,
        required=True,
        help="the head's config section as JSON (its keys depend on its type)",
    )
    s.add_argument("--folds", required=True)
    s.add_argument("--fold", type=int, required=True)
    s.add_argument(
        "--inputs", help="the training-inputs index (genedml training-inputs): every section's features and targets"
    )
    s.add_argument("--features", nargs="+", help="sample=path.zarr ... (instead of --inputs)")
    s.add_argument("--targets", nargs="+", help="sample=path.h5ad ... (instead of --inputs)")
    s.add_argument(
        "--spot-images", nargs="*", default=[], help="sample=path.zarr ... (heads with a trainable image encoder)"
    )
    s.add_argument("--out-dir", required=True)
    s.add_argument("--threads", type=int, default=None)


def _training_paths(a) -> tuple[dict, dict]:
    """The sections' features and targets: from the index (--inputs) or given as sample=path pairs."""
    if a.inputs:
        from genedml.pipeline.training_inputs import read_training_inputs

        index = read_training_inputs(a.inputs)
        return index["features"], index["targets"]
    if not (a.features and a.targets):
        raise SystemExit("genedml train: give --inputs INDEX, or both --features and --targets")
    return _sample_paths(a.features), _sample_paths(a.targets)


@subcommand("train", "fit a head on one fold and predict its held-out sections", _train_args)
def train(a):
    _passive_openmp_waits()
    from genedml.heads.train import train_fold

    _set_threads(a.threads)
    features, targets = _training_paths(a)
    train_fold(
        a.head,
        a.params,
        a.folds,
        a.fold,
        features,
        targets,
        a.out_dir,
        spot_images=_sample_paths(a.spot_images) if a.spot_images else None,
    )


def _training_inputs_args(s):
    s.add_argument("--sheet", required=True, help="the run's sample sheet: every cross-validation section")
    s.add_argument("--features-pattern", required=True, help="feature store path with {sample}")
    s.add_argument("--targets-pattern", required=True, help="targets path with {sample}")
    s.add_argument("--out", required=True)


@subcommand("training-inputs", "index every section's features and targets for the train jobs", _training_inputs_args)
def training_inputs(a):
    from genedml.io.sample_sheet import read_sample_sheet
    from genedml.pipeline.training_inputs import write_training_inputs

    samples = read_sample_sheet(a.sheet)["sample"].tolist()
    patterns = {"features": a.features_pattern, "targets": a.targets_pattern}
    write_training_inputs(samples, patterns, a.out)
    log.info("indexed the features and targets of %d section(s) in %s", len(samples), a.out)


def _predict_args(s):
    s.add_argument("--head", required=True, help="the head's name (recorded in the output)")
    s.add_argument("--models", nargs="+", required=True, help="fold folders: results/heads/{head}/fold{k} ...")
    s.add_argument("--sample", required=True)
    s.add_argument("--patient", default="")
    s.add_argument("--features", required=True, help="the section's feature store (.zarr)")
    s.add_argument("--reference-features", help="a training section's store: encoder and tiles must match")
    s.add_argument("--spot-images", help="the section's spot-image store (heads with a trainable image encoder)")
    s.add_argument("--st", help="the section's .h5ad: its uns['spatial'] (image, scale factors) is copied")
    s.add_argument("--ood", help="the section's OOD scores (genedml ood-score TSV), added as obs['ood_score']")
    s.add_argument("--block-spots", type=int, default=None, help="spots predicted at once (memory per block)")
    s.add_argument("--out", required=True, help="output .h5ad")
    s.add_argument("--threads", type=int, default=None)


@subcommand("predict", "apply a head's trained fold models to a section without counts (.h5ad)", _predict_args)
def predict(a):
    _passive_openmp_waits()
    from genedml.heads.predict import predict_sample

    _set_threads(a.threads)
    predict_sample(
        a.head,
        a.models,
        a.sample,
        a.features,
        a.out,
        reference_features=a.reference_features,
        patient=a.patient,
        spot_images=a.spot_images,
        st=a.st,
        ood=a.ood,
        **({"block_spots": a.block_spots} if a.block_spots else {}),
    )


def _ood_reference_args(s):
    from genedml.evaluation.ood import OODSpec

    s.add_argument("--folds", required=True, help="folds.tsv (fold, sample, patient, split)")
    s.add_argument("--features", nargs="+", required=True, metavar="S=PATH", help="feature store of each sample")
    s.add_argument("--out", required=True, help="folder for fold{k}.npz and reference.json")
    OODSpec.add_arguments(s)


@subcommand("ood-reference", "per-fold training embeddings and held-out calibration of OOD scores", _ood_reference_args)
def ood_reference(a):
    from genedml.evaluation.ood import OODSpec, build_reference
    from genedml.study.folds import read_folds

    spec = _spec_from_args(OODSpec, a)
    build_reference(read_folds(a.folds), _sample_paths(a.features), a.out, **spec.to_config())


_OOD_SLIDE_KEYS = ("ood_threshold", "ood_warn_fraction")


def _ood_score_args(s):
    from genedml.pipeline.schema import part

    slides = part("slides")["properties"]
    threshold, fraction = (slides[k] for k in _OOD_SLIDE_KEYS)
    s.add_argument("--reference", required=True, help="the ood-reference folder")
    s.add_argument("--features", required=True, help="the section's feature store (.zarr)")
    s.add_argument("--sample", required=True)
    s.add_argument("--out-tsv", required=True, help="per-spot scores: barcode, score, score_fold{k}...")
    s.add_argument("--out-json", required=True, help="the section's summary")
    s.add_argument(
        "--threshold",
        type=float,
        default=threshold["default"],
        help=f"config slides.ood_threshold: {threshold['description']} (default: {threshold['default']})",
    )
    s.add_argument(
        "--warn-fraction",
        type=float,
        default=fraction["default"],
        help=f"config slides.ood_warn_fraction: {fraction['description']} (default: {fraction['default']})",
    )
    s.add_argument(
        "--held-out-only", action="store_true", help="a test sample of some folds is scored by those folds only"
    )


@subcommand("ood-score", "out-of-distribution scores of one section's spots (TSV + JSON)", _ood_score_args)
def ood_score(a):
    from genedml.evaluation.ood import score_sample
    from genedml.pipeline.schema import with_defaults

    try:
        with_defaults("slides", dict(zip(_OOD_SLIDE_KEYS, (a.threshold, a.warn_fraction))), _OOD_SLIDE_KEYS)
    except ValueError as exc:
        raise InputError(f"slides settings: {exc}", a.sample) from exc
    score_sample(
        a.reference,
        a.features,
        a.sample,
        a.out_tsv,
        a.out_json,
        threshold=a.threshold,
        warn_fraction=a.warn_fraction,
        held_out_only=a.held_out_only,
    )


def _ceiling_args(s):
    from genedml.evaluation.ceiling import CeilingSpec

    s.add_argument("--folds", required=True, help="folds.tsv (fold, sample, split); its test sections are not read")
    s.add_argument("--inputs", required=True, help="the training-inputs index: every section's features and targets")
    s.add_argument("--genes", required=True, help="the gene table (results/genes/genes.tsv) or a gene list")
    s.add_argument("--out", required=True, help="per-gene TSV: gene, ceiling_score, gearys_c, per-fold columns")
    CeilingSpec.add_arguments(s)


@subcommand("ceiling", "per-gene ceiling: Geary's C of the targets on the embeddings' kNN graph", _ceiling_args)
def ceiling(a):
    from genedml.evaluation.ceiling import CeilingSpec, read_genes, write_ceiling
    from genedml.study.folds import read_folds

    spec = _spec_from_args(CeilingSpec, a)
    write_ceiling(read_folds(a.folds), a.inputs, read_genes(a.genes), spec, a.out)


def _ceiling_figure_args(s):
    s.add_argument("--ceiling", required=True, help="the ceiling table (genedml ceiling)")
    s.add_argument("--per-gene", nargs="+", required=True, metavar="KEY=PATH", help="per_gene.tsv of each head")
    s.add_argument("--labels", nargs="*", default=[], metavar="KEY=LABEL", help="panel titles (default: the key)")
    s.add_argument("--out", required=True, help="output PNG")


@subcommand("ceiling-figure", "per-gene ceiling score against each head's mean PCC", _ceiling_figure_args)
def ceiling_figure(a):
    from genedml.evaluation.ceiling import ceiling_figure as draw

    draw(a.ceiling, _sample_paths(a.per_gene), _sample_paths(a.labels), a.out)


# ------------------------------------------------------------------------------- evaluation and report


def _evaluate_args(s):
    from genedml.evaluation.evaluate import EvaluateSpec
    from genedml.study.targets import TargetSpec

    s.add_argument("--head", required=True)
    s.add_argument("--predictions", nargs="+", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--export-dir")
    s.add_argument("--thumbnails", nargs="*", help="sample=thumbnail.json ... (adds uns['spatial'] to the exports)")
    EvaluateSpec.add_arguments(s)
    TargetSpec.add_arguments(s)  # recorded beside the metrics


@subcommand("evaluate", "metrics of one head over all folds", _evaluate_args)
def evaluate(a):
    from genedml.evaluation.evaluate import EvaluateSpec, evaluate_head
    from genedml.study.targets import TargetSpec

    spec = _spec_from_args(EvaluateSpec, a)
    evaluate_head(
        a.head,
        a.predictions,
        a.out_dir,
        n_top=spec.pcc_h_genes,
        heg_hvg=spec.heg_hvg,
        recipe=_spec_from_args(TargetSpec, a).recipe,
        export_dir=a.export_dir,
        thumbnails=_sample_paths(a.thumbnails or []),
    )


def _summarize_args(s):
    s.add_argument("--summaries", nargs="+", required=True)
    s.add_argument("--out", required=True)


@subcommand("summarize", "combine per-head summaries into one table", _summarize_args)
def summarize(a):
    from genedml.evaluation.evaluate import combine_summaries

    combine_summaries(a.summaries, a.out)


def _keys_arg(text: str) -> dict:
    """The run's keys: inline JSON (starting with ``{``) or the path of a JSON file."""
    if text.lstrip().startswith("{"):
        return _json_arg(text)
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"neither inline JSON nor an existing file: {text}")
    return _json_arg(path.read_text())


def _compare_args(s):
    from genedml.evaluation.stats import LEVEL, N_BOOT, SEED

    s.add_argument("--results-dir", required=True, help="folder of the metrics folders: {results-dir}/{key}/")
    s.add_argument(
        "--keys",
        required=True,
        type=_keys_arg,
        metavar="JSON",
        help='{key: {"head", "type", "encoder", "protocol", "seed", "control", "label"}}, inline or a file',
    )
    s.add_argument("--sheet", required=True, help="the run's sample sheet (sample -> patient)")
    s.add_argument("--out-dir", required=True, help="folder for the comparison tables and matrix_pcc_a.png")
    s.add_argument("--bootstrap", type=int, default=N_BOOT, help=f"patient-bootstrap resamples (default {N_BOOT})")
    s.add_argument("--level", type=float, default=LEVEL, help=f"interval level (default {LEVEL})")
    s.add_argument("--seed", type=int, default=SEED, help=f"bootstrap random seed (default {SEED})")


@subcommand("compare", "intervals, optimism gap, paired tests, seeds and controls of the run's heads", _compare_args)
def compare(a):
    from genedml.evaluation.compare import parse_keys, run_compare
    from genedml.io.sample_sheet import read_sample_sheet

    if a.bootstrap < 1 or not 0.0 < a.level < 1.0:
        raise InputError(f"--bootstrap must be >= 1 and --level in (0, 1), not {a.bootstrap} and {a.level}")
    try:
        parse_keys(a.keys)  # an unknown protocol or control: a clear error naming the key, no traceback
    except ValueError as exc:
        raise InputError(f"--keys: {exc}") from exc
    run_compare(a.results_dir, a.keys, read_sample_sheet(a.sheet), a.out_dir, a.bootstrap, a.level, a.seed)


def _thumbnail_args(s):
    from genedml.evaluation.thumbnails import ThumbnailSpec

    s.add_argument("--sample", required=True)
    s.add_argument("--slide", required=True)
    s.add_argument("--geometry", required=True, help="the sample's tiles .npz (pixel size, spot centres)")
    s.add_argument("--metadata", help="HEST metadata JSON (spot_diameter)")
    s.add_argument("--out-image", required=True)
    s.add_argument("--out-json", required=True)
    ThumbnailSpec.add_arguments(s)


@subcommand("thumbnail", "small H&E image of a slide and its scale factors (report, scanpy)", _thumbnail_args)
def thumbnail(a):
    from genedml.evaluation.thumbnails import ThumbnailSpec, make_thumbnail

    spec = _spec_from_args(ThumbnailSpec, a, a.sample)
    make_thumbnail(a.sample, a.slide, a.geometry, a.metadata, a.out_image, a.out_json, max_px=spec.thumbnail_px)


def _figures_args(s):
    from genedml.evaluation.figures import SpatialFigureSpec

    s.add_argument("--head", required=True)
    s.add_argument("--exports", nargs="+", required=True, help="sample=exported.h5ad ...")
    s.add_argument("--thumbnails", nargs="+", required=True, help="sample=thumbnail.json ...")
    s.add_argument("--genes", required=True, help="genes.tsv (fallback genes when none asked for is predicted)")
    s.add_argument("--out-dir", required=True)
    SpatialFigureSpec.add_arguments(s)


@subcommand("figures", "spatial maps (truth vs prediction over H&E) of one head's sections", _figures_args)
def figures(a):
    from genedml.evaluation.figures import SpatialFigureSpec, head_spatial_figures

    wanted = _spec_from_args(SpatialFigureSpec, a).spatial_genes
    head_spatial_figures(a.head, _sample_paths(a.exports), _sample_paths(a.thumbnails), a.genes, wanted, a.out_dir)


def _predict_slide_args(s):
    s.add_argument("--slide", required=True, help="a bare H&E slide (SVS, NDPI, pyramidal TIFF, ...)")
    s.add_argument("--sample", help="its id in every output (default: the file name)")
    s.add_argument("--mpp", type=float, help="µm per level-0 pixel, when the slide's own is missing or wrong")
    s.add_argument("--configfile", nargs="+", default=["config.yaml"], help="the trained run's config file(s)")
    s.add_argument("--heads", nargs="*", help="heads to predict with (default: every head of the run)")
    s.add_argument("--cores", type=int, default=1)
    s.add_argument("--directory", default=".", help="the trained run's working directory (holds results/)")


@subcommand(
    "predict-slide",
    "predict expression on a bare slide with a trained run: tissue, virtual spots, fold ensemble, OOD, maps",
    _predict_slide_args,
)
def predict_slide(a):
    from genedml.pipeline.predict_slide import predict_slide as run

    sys.exit(run(a.slide, a.configfile, a.sample, a.mpp, a.heads, a.cores, a.directory))


def _slide_maps_args(s):
    s.add_argument("--predictions", required=True, help="a slide's prediction .h5ad (genedml predict)")
    s.add_argument("--genes", nargs="*", default=[], help="genes to draw (those predicted; else the first three)")
    s.add_argument("--out", required=True, help="output PNG")


@subcommand("slide-maps", "maps of chosen genes, fold disagreement and OOD score over a slide", _slide_maps_args)
def slide_maps(a):
    from genedml.evaluation.slide_maps import slide_maps as draw

    draw(a.predictions, a.genes, a.out)


def _figures_overview_args(s):
    s.add_argument("--heads", type=_json_arg, required=True, help="head -> report spec, as JSON")
    s.add_argument("--metrics-dir", required=True)
    s.add_argument("--out-dir", required=True)


@subcommand("figures-overview", "per-gene PCC distribution of all heads; sweep plots", _figures_overview_args)
def figures_overview(a):
    from genedml.evaluation.figures import overview_figures

    overview_figures(a.heads, a.metrics_dir, a.out_dir)


def _report_args(s):
    from genedml.evaluation.evaluate import EvaluateSpec
    from genedml.study.targets import TargetSpec

    s.add_argument("--results-dir", required=True)
    s.add_argument("--heads", type=_json_arg, required=True, help="head -> report spec, as JSON")
    s.add_argument("--sheet", required=True, help="the sample sheet (its dataset column)")
    s.add_argument("--features", nargs="+", required=True, help="feature stores (encoder facts, checksums)")
    s.add_argument("--site-dir", required=True, help="folder for index.html, index.md, figures/, tables/")
    s.add_argument("--markdown", help="also write the Markdown here, linking into the site folder")
    s.add_argument("--config-facts", type=_json_arg, default={}, help="config slices to list, as JSON")
    s.add_argument(
        "--unlabelled",
        type=_json_arg,
        default={},
        help='sections predicted without counts, as JSON: {sample: {"heads": [...], "slide": true}}',
    )
    EvaluateSpec.add_arguments(s)
    TargetSpec.add_arguments(s)


@subcommand("report", "write the HTML + Markdown report", _report_args)
def report(a):
    from genedml.evaluation.evaluate import EvaluateSpec
    from genedml.report import build_report
    from genedml.study.targets import TargetSpec

    build_report(
        a.results_dir,
        a.heads,
        a.sheet,
        _spec_from_args(TargetSpec, a).recipe,
        a.features,
        a.site_dir,
        a.markdown,
        config_facts=a.config_facts,
        n_top=_spec_from_args(EvaluateSpec, a).pcc_h_genes,
        unlabelled=a.unlabelled,
    )
    log.info("report written to %s and %s", a.site_dir, a.markdown)


# ------------------------------------------------------------------------------------- tools


def _config_args(s):
    s.add_argument("action", choices=["show"], help="show: the config with every default filled in (YAML)")
    s.add_argument(
        "configfiles",
        nargs="*",
        default=["config.yaml"],
        help="config files, merged in order as `snakemake --configfile` does (default: config.yaml)",
    )


@subcommand("config", "the config as the pipeline reads it: `genedml config show [FILES]`", _config_args)
def config(a):
    from genedml.pipeline.schema import resolved_config

    print(resolved_config(a.configfiles), end="")


def _plan_args(s):
    from genedml.pipeline.cost import DEFAULT_TILES_PER_SECOND

    s.add_argument(
        "--configfile",
        nargs="+",
        default=["config.yaml"],
        help="config files, merged in order as `snakemake --configfile` does (default: config.yaml); they give the "
        "samples (unless --hest-ids), tiles, encoder, folds and heads",
    )
    s.add_argument(
        "--hest-ids",
        nargs="+",
        metavar="ID",
        help="cost these HEST-1k samples instead of the config's (`all`: every row of the table, then --filter)",
    )
    s.add_argument(
        "--filter",
        nargs="+",
        default=[],
        metavar="COLUMN=VALUE",
        help="keep HEST rows whose column has this value (repeat a column for several), e.g. "
        "st_technology=Visium species='Homo sapiens'",
    )
    s.add_argument(
        "--hest-metadata",
        metavar="CSV",
        help="HEST's metadata table (HEST_v1_1_0.csv of a download; default: genedml's copy of v1.1.0)",
    )
    rate = s.add_mutually_exclusive_group()
    rate.add_argument(
        "--tiles-per-second",
        type=float,
        help=f"encoder throughput the GPU time is computed at (default: from --gpu-bench, else "
        f"{DEFAULT_TILES_PER_SECOND:g}, an ASSUMPTION for UNI ViT-L/16 in fp32; genedml/pipeline/cost.py)",
    )
    rate.add_argument("--gpu-bench", metavar="JSON", help="a `genedml bench gpu --out` file: its measured rate")
    s.add_argument("--per-sample", metavar="TSV", help="also write each sample's spots and encoder calls here")


@subcommand("plan", "spots, encoder calls, GPU hours and store sizes of a run, before anything runs", _plan_args)
def plan(a):
    from genedml.pipeline.cost import hest_samples, load_config, read_hest_table
    from genedml.pipeline.cost import plan_cost as cost_of

    table = read_hest_table(a.hest_metadata)
    filters: dict[str, list[str]] = {}
    for item in a.filter:
        column, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"genedml plan: --filter {item!r} is not COLUMN=VALUE")
        filters.setdefault(column, []).append(value)
    rows = hest_samples(table, a.hest_ids, **filters) if a.hest_ids or filters else None
    name = " + ".join(a.configfile) + (f", {len(rows)} HEST samples" if rows is not None else "")
    cost = cost_of(load_config(a.configfile), a.tiles_per_second, name, rows, table, a.gpu_bench)
    print(cost.format())
    if a.per_sample:
        from genedml.atomic import write_tsv

        write_tsv(a.per_sample, cost.table())


# the earlier name of `genedml plan`
SUBCOMMANDS.append(("plan-cost", "the same as `genedml plan`", _plan_args, plan))


def _bench_args(s):
    from genedml.bench import add_bench_parsers

    add_bench_parsers(s.add_subparsers(dest="bench", required=True))


def _profile_args(s):
    from genedml.pipeline.profile import add_profile_parsers

    add_profile_parsers(s.add_subparsers(dest="profile", required=True))


SUBCOMMANDS.append(
    ("bench", "benchmarks (ratios measured in one run); see genedml bench embed --help", _bench_args, None)
)
SUBCOMMANDS.append(
    ("profile", "Snakemake profiles: `genedml profile install cluster --partition P`", _profile_args, None)
)


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named on a command line (the first word that is not an option of ``genedml`` itself)."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--log-level":
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            return word
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command``, only that subcommand gets its arguments: building every
    subcommand's flags from the config schema (and importing their modules) cost each rule's job ~1 s."""
    p = argparse.ArgumentParser(
        prog="genedml", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"genedml {__version__}")
    p.add_argument("--log-level", default=os.environ.get("GENEDML_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)
    known = {name for name, *_ in SUBCOMMANDS}
    for name, help_text, arguments, handler in SUBCOMMANDS:
        s = sub.add_parser(name, help=help_text, description=help_text)
        if command in known and name != command:
            continue
        arguments(s)
        if handler is not None:
            s.set_defaults(func=handler)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_of(argv)).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (InputError, FileNotFoundError) as exc:
        if isinstance(exc, InputError):
            log.error("%s", exc)
        print(f"genedml {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
