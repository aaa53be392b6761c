"""``genedml``: one subcommand per pipeline stage. Every Snakemake rule calls one of these."""

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


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _passive_openmp_waits() -> None:
    """Let idle OpenMP threads sleep instead of spinning (must run before torch is imported). Training
    runs many small ops; on a machine where other processes also run, spinning threads wait for each
    other: one HER2ST fold of the genedml head took 309 s with 2 spinning threads, 42 s with
    OMP_WAIT_POLICY=PASSIVE, 28 s with one thread (README "The Gene-DML head"). A user's setting wins."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_demo_data(a):
    from genedml.io.demo import make_section

    make_section(a.sample, a.patient, a.out_dir, seed=a.seed, n_genes=a.n_genes,
                 width_um=a.width_um, height_um=a.height_um, mpp=a.mpp)


def cmd_tile(a):
    from genedml.io.hest import SamplePaths
    from genedml.tiles.geometry import TileSpec, parse_grid_offset, tile_sample

    paths = SamplePaths(a.sample, Path(a.slide), Path(a.st), Path(a.metadata)) if a.slide else \
        SamplePaths.in_hest_dir(a.hest_dir, a.sample)
    try:
        spec = TileSpec(a.tile_px, None if a.target_mpp in (None, "native") else float(a.target_mpp), a.grid,
                        a.min_inside, a.neighbour_mode, a.grid_stride, parse_grid_offset(a.grid_offset))
    except ValueError as exc:
        raise InputError(f"tile settings: {exc}", a.sample) from exc
    g = tile_sample(paths, spec, a.out)
    log.info("%s: %d spots, slide %.4f µm/px (%s), scale %.3f level-0 px per tile px, %d of %d neighbour tiles in image",
             a.sample, g.n_spots, g.slide_mpp, g.mpp_source, g.scale, int(g.neighbour_mask.sum()), g.neighbour_mask.size)
    log.info("%s: %s", a.sample, json.dumps(g.summary()))


def cmd_embed(a):
    from genedml.tiles.embed import embed_sample
    from genedml.tiles.encoders import build_encoder
    from genedml.tiles.geometry import Geometry

    _set_threads(a.threads)
    geometry = Geometry.load(a.geometry)
    if a.slide:
        geometry.slide_path = a.slide
    encoder = build_encoder(a.encoder)
    embed_sample(geometry, encoder, a.out, batch_size=a.batch_size, num_workers=a.num_workers, device=a.device)


def cmd_genes(a):
    from genedml.atomic import write_tsv
    from genedml.study.genes import select_genes

    st = dict(zip(a.samples, a.st)) if a.samples else {Path(p).stem: p for p in a.st}
    genes, table = select_genes(st, n_top=a.n_top, gene_list=a.gene_list, min_spot_fraction=a.min_spot_fraction,
                                missing=a.missing)
    write_tsv(a.out, table)
    log.info("%d genes chosen (%s) from %d samples", len(genes), "list " + a.gene_list if a.gene_list else "top by total counts", len(st))


def cmd_targets(a):
    import pandas as pd

    from genedml.study.targets import build_sample_targets

    genes = pd.read_csv(a.genes, sep="\t")["gene"].tolist()
    build_sample_targets(a.st, a.sample, genes, a.recipe, a.out)
    log.info("%s: %s targets for %d genes", a.sample, a.recipe, len(genes))


def cmd_gene_semantics(a):
    import pandas as pd

    from genedml.study.gene_semantics import write_gene_semantics

    _set_threads(a.threads)
    genes = pd.read_csv(a.genes, sep="\t")["gene"].astype(str).tolist()
    write_gene_semantics(a.out, genes, model=a.model, descriptions=a.descriptions, template=a.template,
                         missing_description=a.missing_description, device=a.device)


def cmd_folds(a):
    from genedml.atomic import write_tsv
    from genedml.study.folds import make_folds, read_sample_sheet

    from genedml.study.folds import resolve_fold_table

    sheet = read_sample_sheet(a.sheet)
    scheme, table = resolve_fold_table(a.scheme, a.table, sheet, a.dataset, a.reference_set)
    folds = make_folds(sheet, scheme, a.n_folds, a.seed, a.val_patients, table)
    write_tsv(a.out, folds)
    for k, grp in folds.groupby("fold"):
        log.info("fold %d: test %s | val %s", k, ",".join(grp.loc[grp.split == "test", "sample"]),
                 ",".join(grp.loc[grp.split == "val", "sample"]) or "-")


def cmd_import_st(a):
    from genedml.io.legacy_st import LegacyFiles, import_section

    section = a.section or a.sample
    if a.counts or a.spots or a.image:
        if not (a.counts and a.spots and a.image):
            raise InputError("give all of --counts, --spots and --image, or --st-dir with --section", section)
        files = LegacyFiles(section, Path(a.counts), Path(a.spots), Path(a.image))
    else:
        if not a.st_dir:
            raise InputError("give --st-dir (a legacy-ST folder) or --counts, --spots and --image", section)
        files = LegacyFiles.find(a.st_dir, section)
    import_section(files, a.out_dir, sample=a.sample or section, patient=a.patient, dataset=a.dataset,
                   mpp=a.mpp, technology=a.technology, quality=a.quality, overwrite=a.overwrite)


def cmd_sample_sheet(a):
    from genedml.atomic import write_tsv
    from genedml.io.datasets import hest_samples_present, legacy_sections_present, sample_sheet

    naming = "section" if a.source == "legacy_st" else "hest_id"
    available = None
    if a.data_dir:
        available = legacy_sections_present(a.data_dir) if a.source == "legacy_st" else hest_samples_present(a.data_dir)
    sheet = sample_sheet(a.dataset, a.samples or None, naming=naming, available=available)
    write_tsv(a.out, sheet)
    log.info("%s: %d samples from %d patients: %s", a.dataset, len(sheet), sheet["patient"].nunique(),
             ", ".join(sheet["sample"]))


def _sample_paths(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        sample, _, path = p.partition("=")
        out[sample] = path
    return out


def cmd_train(a):
    _passive_openmp_waits()
    from genedml.heads.train import train_fold

    _set_threads(a.threads)
    train_fold(a.head, a.params, a.folds, a.fold, _sample_paths(a.features), _sample_paths(a.targets),
               a.out_dir, seed=a.params.get("seed", 0))


def cmd_predict(a):
    _passive_openmp_waits()
    from genedml.heads.predict import predict_sample

    _set_threads(a.threads)
    predict_sample(a.head, a.models, a.sample, a.features, a.out, reference_features=a.reference_features,
                   patient=a.patient)


def cmd_evaluate(a):
    from genedml.evaluation.evaluate import evaluate_head

    evaluate_head(a.head, a.predictions, a.out_dir, n_top=a.n_top, recipe=a.recipe, export_dir=a.export_dir,
                  thumbnails=_sample_paths(a.thumbnails or []))


def cmd_summarize(a):
    from genedml.evaluation.evaluate import combine_summaries

    combine_summaries(a.summaries, a.out)


def cmd_thumbnail(a):
    from genedml.evaluation.thumbnails import make_thumbnail

    make_thumbnail(a.sample, a.slide, a.geometry, a.metadata, a.out_image, a.out_json, max_px=a.max_px)


def cmd_figures(a):
    from genedml.evaluation.figures import head_spatial_figures

    head_spatial_figures(a.head, _sample_paths(a.exports), _sample_paths(a.thumbnails), a.genes, a.spatial_genes,
                         a.out_dir)


def cmd_figures_overview(a):
    from genedml.evaluation.figures import overview_figures

    overview_figures(a.heads, a.metrics_dir, a.out_dir)


def cmd_report(a):
    from genedml.report.build import build_report

    build_report(a.results_dir, a.heads, a.sheet, a.recipe, a.features, a.site_dir, a.markdown,
                 config_facts=a.config_facts, n_top=a.n_top)
    log.info("report written to %s and %s", a.site_dir, a.markdown)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genedml", description=__doc__)
    p.add_argument("--version", action="version", version=f"genedml {__version__}")
    p.add_argument("--log-level", default=os.environ.get("GENEDML_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo-data", help="write one synthetic section in the HEST-1k layout")
    s.add_argument("--sample", required=True)
    s.add_argument("--patient", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n-genes", type=int, default=300)
    s.add_argument("--width-um", type=float, default=2000)
    s.add_argument("--height-um", type=float, default=1400)
    s.add_argument("--mpp", type=float, default=0.5)
    s.set_defaults(func=cmd_demo_data)

    s = sub.add_parser("tile", help="spot geometry: local crops and neighbour tiles on the slide")
    s.add_argument("--sample", required=True)
    s.add_argument("--hest-dir", help="HEST-1k style folder (wsis/, st/, metadata/)")
    s.add_argument("--slide")
    s.add_argument("--st")
    s.add_argument("--metadata")
    s.add_argument("--out", required=True)
    s.add_argument("--tile-px", type=int, default=224)
    s.add_argument("--target-mpp", default="native", help="µm/px of the crops, or 'native'")
    s.add_argument("--grid", type=int, default=5)
    s.add_argument("--min-inside", type=float, default=0.5)
    s.add_argument("--neighbour-mode", choices=["centred", "grid"], default="centred",
                   help="centred: each spot's own 5x5 window (reference); grid: one tile grid per slide, shared")
    s.add_argument("--grid-stride", type=float, default=1.0, help="grid mode: node spacing in tiles (1, 0.5, ...)")
    s.add_argument("--grid-offset", default="auto",
                   help="grid mode: 'auto' (fit to the spots) or 'x,y' = a node centre in tiles")
    s.set_defaults(func=cmd_tile)

    s = sub.add_parser("embed", help="embed local and neighbour tiles with a frozen encoder into Zarr")
    s.add_argument("--geometry", required=True)
    s.add_argument("--slide", help="slide path (defaults to the one recorded in the geometry)")
    s.add_argument("--encoder", type=_json_arg, required=True, help="the config's encoder section as JSON")
    s.add_argument("--out", required=True)
    s.add_argument("--batch-size", type=int, default=64, help="tiles per encoder call")
    s.add_argument("--num-workers", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("genes", help="choose the genes to predict")
    s.add_argument("--st", nargs="+", required=True)
    s.add_argument("--samples", nargs="*")
    s.add_argument("--out", required=True)
    s.add_argument("--n-top", type=int, default=250)
    s.add_argument("--gene-list")
    s.add_argument("--min-spot-fraction", type=float, default=0.0)
    s.add_argument("--missing", choices=["drop", "fail"], default="drop")
    s.set_defaults(func=cmd_genes)

    s = sub.add_parser("targets", help="regression targets of one sample")
    s.add_argument("--sample", required=True)
    s.add_argument("--st", required=True)
    s.add_argument("--genes", required=True)
    s.add_argument("--recipe", default="reference")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_targets)

    s = sub.add_parser("gene-semantics", help="embed the predicted genes' symbols or descriptions (offline)")
    s.add_argument("--genes", required=True, help="genes.tsv from `genedml genes`")
    s.add_argument("--out", required=True, help="output .npz")
    s.add_argument("--model", default="minilm", help="'minilm' (bundled) or a local sentence-transformers folder")
    s.add_argument("--descriptions", help="TSV with columns gene, description (optional)")
    s.add_argument("--template", default="{symbol}", help="text for a gene without description")
    s.add_argument("--missing-description", choices=["symbol", "fail"], default="symbol")
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_gene_semantics)

    s = sub.add_parser("folds", help="patient-grouped cross-validation folds from a sample sheet")
    s.add_argument("--sheet", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--scheme", default="leave_one_patient_out")
    s.add_argument("--n-folds", type=int, default=0)
    s.add_argument("--seed", type=lambda v: None if v in ("none", "None", "") else int(v), default=2021)
    s.add_argument("--val-patients", type=int, default=1)
    s.add_argument("--table")
    s.add_argument("--dataset", help="scheme 'reference': the dataset whose published folds to use "
                                     "(default: the sample sheet's dataset column)")
    s.add_argument("--reference-set", default="legacy", choices=["legacy", "triplex2025"],
                   help="scheme 'reference': the reference code's folds (legacy) or the 2025 TRIPLEX refactor's")
    s.set_defaults(func=cmd_folds)

    s = sub.add_parser("import-st", help="convert a legacy-ST section (ST-cnts, ST-spotfiles, ST-imgs) to the HEST layout")
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
    s.add_argument("--technology", default="st", choices=["st", "visium"],
                   help="spot grid: st = legacy ST (200 µm square grid), visium = 100 µm hexagonal grid")
    s.add_argument("--quality", type=int, default=90, help="JPEG quality of the TIFF tiles")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")
    s.set_defaults(func=cmd_import_st)

    s = sub.add_parser("sample-sheet", help="sample sheet of a known dataset (her2st, stnet, cscc)")
    s.add_argument("--dataset", required=True)
    s.add_argument("--samples", nargs="*", help="HEST ids or section names (default: all found in --data-dir)")
    s.add_argument("--source", default="hest", choices=["hest", "legacy_st"],
                   help="how the data folder names samples: HEST ids (hest) or section names (legacy_st)")
    s.add_argument("--data-dir", help="HEST-1k or legacy-ST folder; only samples present there are listed")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sample_sheet)

    s = sub.add_parser("train", help="fit a head on one fold and predict its held-out sections")
    s.add_argument("--head", required=True)
    s.add_argument("--params", type=_json_arg, required=True, help="the head's config section as JSON")
    s.add_argument("--folds", required=True)
    s.add_argument("--fold", type=int, required=True)
    s.add_argument("--features", nargs="+", required=True, help="sample=path.zarr ...")
    s.add_argument("--targets", nargs="+", required=True, help="sample=path.h5ad ...")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="apply a head's trained fold models to a section without counts (.h5ad)")
    s.add_argument("--head", required=True, help="the head's name (recorded in the output)")
    s.add_argument("--models", nargs="+", required=True, help="fold folders: results/heads/{head}/fold{k} ...")
    s.add_argument("--sample", required=True)
    s.add_argument("--patient", default="")
    s.add_argument("--features", required=True, help="the section's feature store (.zarr)")
    s.add_argument("--reference-features", help="a training section's store: encoder and tiles must match")
    s.add_argument("--out", required=True, help="output .h5ad")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("evaluate", help="metrics of one head over all folds")
    s.add_argument("--head", required=True)
    s.add_argument("--predictions", nargs="+", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--export-dir")
    s.add_argument("--n-top", type=int, default=50)
    s.add_argument("--recipe", default="")
    s.add_argument("--thumbnails", nargs="*", help="sample=thumbnail.json ... (adds uns['spatial'] to the exports)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("summarize", help="combine per-head summaries into one table")
    s.add_argument("--summaries", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_summarize)

    s = sub.add_parser("thumbnail", help="small H&E image of a slide and its scale factors (report, scanpy)")
    s.add_argument("--sample", required=True)
    s.add_argument("--slide", required=True)
    s.add_argument("--geometry", required=True, help="the sample's tiles .npz (pixel size, spot centres)")
    s.add_argument("--metadata", help="HEST metadata JSON (spot_diameter)")
    s.add_argument("--out-image", required=True)
    s.add_argument("--out-json", required=True)
    s.add_argument("--max-px", type=int, default=2000)
    s.set_defaults(func=cmd_thumbnail)

    s = sub.add_parser("figures", help="spatial maps (truth vs prediction over H&E) of one head's sections")
    s.add_argument("--head", required=True)
    s.add_argument("--exports", nargs="+", required=True, help="sample=exported.h5ad ...")
    s.add_argument("--thumbnails", nargs="+", required=True, help="sample=thumbnail.json ...")
    s.add_argument("--genes", required=True, help="genes.tsv (fallback genes when none asked for is predicted)")
    s.add_argument("--spatial-genes", nargs="*", default=["GNAS", "FASN", "ERBB2"])
    s.add_argument("--out-dir", required=True)
    s.set_defaults(func=cmd_figures)

    s = sub.add_parser("figures-overview", help="per-gene PCC distribution of all heads; sweep plots")
    s.add_argument("--heads", type=_json_arg, required=True, help="head -> report spec, as JSON")
    s.add_argument("--metrics-dir", required=True)
    s.add_argument("--out-dir", required=True)
    s.set_defaults(func=cmd_figures_overview)

    s = sub.add_parser("report", help="write the HTML + Markdown report")
    s.add_argument("--results-dir", required=True)
    s.add_argument("--heads", type=_json_arg, required=True, help="head -> report spec, as JSON")
    s.add_argument("--sheet", required=True, help="the sample sheet (its dataset column)")
    s.add_argument("--features", nargs="+", required=True, help="feature stores (encoder facts, checksums)")
    s.add_argument("--site-dir", required=True, help="folder for index.html, index.md, figures/, tables/")
    s.add_argument("--markdown", help="also write the Markdown here, linking into the site folder")
    s.add_argument("--recipe", default="")
    s.add_argument("--n-top", type=int, default=50)
    s.add_argument("--config-facts", type=_json_arg, default={}, help="config slices to list, as JSON")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("bench", help="benchmarks (ratios measured in one run); see genedml bench embed --help")
    bench = s.add_subparsers(dest="bench", required=True)
    from genedml.bench import add_bench_parsers

    add_bench_parsers(bench)

    s = sub.add_parser("profile", help="Snakemake profiles: `genedml profile install cluster --partition P`")
    profile = s.add_subparsers(dest="profile", required=True)
    from genedml.pipeline.profile import add_profile_parsers

    add_profile_parsers(profile)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except InputError as exc:
        log.error("%s", exc)
        print(f"genedml {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"genedml {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
