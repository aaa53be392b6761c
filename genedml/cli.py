"""``genedml``: one subcommand per pipeline stage. Every Snakemake rule calls one of these."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import InputError

log = logging.getLogger("genedml")


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_demo_data(a):
    from .demo import make_section

    make_section(a.sample, a.patient, a.out_dir, seed=a.seed, n_genes=a.n_genes,
                 width_um=a.width_um, height_um=a.height_um, mpp=a.mpp)


def cmd_tile(a):
    from .hest import SamplePaths
    from .tiling import TileSpec, tile_sample

    paths = SamplePaths(a.sample, Path(a.slide), Path(a.st), Path(a.metadata)) if a.slide else \
        SamplePaths.in_hest_dir(a.hest_dir, a.sample)
    spec = TileSpec(a.tile_px, None if a.target_mpp in (None, "native") else float(a.target_mpp), a.grid, a.min_inside)
    g = tile_sample(paths, spec, a.out)
    log.info("%s: %d spots, slide %.4f µm/px (%s), scale %.3f level-0 px per tile px, %d of %d neighbour tiles in image",
             a.sample, g.n_spots, g.slide_mpp, g.mpp_source, g.scale, int(g.neighbour_mask.sum()), g.neighbour_mask.size)


def cmd_embed(a):
    from .embed import embed_sample
    from .encoders import build_encoder
    from .tiling import Geometry

    _set_threads(a.threads)
    geometry = Geometry.load(a.geometry)
    if a.slide:
        geometry.slide_path = a.slide
    encoder = build_encoder(a.encoder)
    embed_sample(geometry, encoder, a.out, batch_size=a.batch_size, num_workers=a.num_workers, device=a.device)


def cmd_genes(a):
    from .atomic import write_tsv
    from .genes import select_genes

    st = dict(zip(a.samples, a.st)) if a.samples else {Path(p).stem: p for p in a.st}
    genes, table = select_genes(st, n_top=a.n_top, gene_list=a.gene_list, min_spot_fraction=a.min_spot_fraction,
                                missing=a.missing)
    write_tsv(a.out, table)
    log.info("%d genes chosen (%s) from %d samples", len(genes), "list " + a.gene_list if a.gene_list else "top by total counts", len(st))


def cmd_targets(a):
    import pandas as pd

    from .targets import build_sample_targets

    genes = pd.read_csv(a.genes, sep="\t")["gene"].tolist()
    build_sample_targets(a.st, a.sample, genes, a.recipe, a.out)
    log.info("%s: %s targets for %d genes", a.sample, a.recipe, len(genes))


def cmd_folds(a):
    import pandas as pd

    from .atomic import write_tsv
    from .folds import make_folds, read_sample_sheet

    sheet = read_sample_sheet(a.sheet)
    table = pd.read_csv(a.table, sep="\t", dtype=str) if a.table else None
    if table is not None and "fold" in table:
        table["fold"] = table["fold"].astype(int)
    folds = make_folds(sheet, a.scheme, a.n_folds, a.seed, a.val_patients, table)
    write_tsv(a.out, folds)
    for k, grp in folds.groupby("fold"):
        log.info("fold %d: test %s | val %s", k, ",".join(grp.loc[grp.split == "test", "sample"]),
                 ",".join(grp.loc[grp.split == "val", "sample"]) or "-")


def _sample_paths(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        sample, _, path = p.partition("=")
        out[sample] = path
    return out


def cmd_train(a):
    from .train import train_fold

    _set_threads(a.threads)
    train_fold(a.head, a.params, a.folds, a.fold, _sample_paths(a.features), _sample_paths(a.targets),
               a.out_dir, seed=a.params.get("seed", 0))


def cmd_evaluate(a):
    from .evaluate import evaluate_head

    evaluate_head(a.head, a.predictions, a.out_dir, n_top=a.n_top, recipe=a.recipe, export_dir=a.export_dir)


def cmd_summarize(a):
    from .evaluate import combine_summaries

    combine_summaries(a.summaries, a.out)


def cmd_report(a):
    from .report import write_report

    per_section = dict(p.split("=", 1) for p in a.per_section)
    write_report(a.out, a.summary, per_section, a.folds, a.genes, a.features_store, a.recipe)
    log.info("report written to %s", a.out)


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

    s = sub.add_parser("folds", help="patient-grouped cross-validation folds from a sample sheet")
    s.add_argument("--sheet", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--scheme", default="leave_one_patient_out")
    s.add_argument("--n-folds", type=int, default=0)
    s.add_argument("--seed", type=lambda v: None if v in ("none", "None", "") else int(v), default=2021)
    s.add_argument("--val-patients", type=int, default=1)
    s.add_argument("--table")
    s.set_defaults(func=cmd_folds)

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

    s = sub.add_parser("evaluate", help="metrics of one head over all folds")
    s.add_argument("--head", required=True)
    s.add_argument("--predictions", nargs="+", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--export-dir")
    s.add_argument("--n-top", type=int, default=50)
    s.add_argument("--recipe", default="")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("summarize", help="combine per-head summaries into one table")
    s.add_argument("--summaries", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_summarize)

    s = sub.add_parser("report", help="write the Markdown report")
    s.add_argument("--out", required=True)
    s.add_argument("--summary", required=True)
    s.add_argument("--per-section", nargs="+", required=True, help="head=per_section.tsv ...")
    s.add_argument("--folds", required=True)
    s.add_argument("--genes", required=True)
    s.add_argument("--features-store", required=True, help="any one feature store (for the run facts)")
    s.add_argument("--recipe", default="")
    s.set_defaults(func=cmd_report)
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
