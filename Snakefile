# genedml: spatial gene expression from H&E whole-slide images.
# Stages: demo data -> tile -> embed (GPU, once) -> genes/targets -> folds -> train heads -> evaluate -> report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/tile.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/gene_semantics.smk"
include: "workflow/rules/folds.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/ceiling.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/slides.smk"


rule all:
    input:
        "results/metrics/summary.tsv",
        "results/report.md",
        "results/report",
        # the caches are products too: a deleted feature or spot-image store is rebuilt (docs/embedding.md)
        RUN.feature_stores(),
        RUN.spot_image_stores(),
        # every held-out section's predictions, one folder of .h5ad per head
        expand("results/predictions/{head}", head=HEADS),
        # sections without counts, when config `predict` lists some
        expand("results/predict/{head}/{sample}.h5ad", head=PREDICT_HEADS, sample=PREDICT_SAMPLES),
        # bare slides, when config `slides` lists some: predictions, QC of the tissue mask and lattice, maps
        expand("results/predict/{head}/{sample}.h5ad", head=SLIDE_HEADS, sample=SLIDE_SAMPLES),
        expand(f"{SLIDES_DIR}/qc/{{sample}}.png", sample=SLIDE_SAMPLES),
        expand("results/slides/maps/{head}/{sample}.png", head=SLIDE_HEADS, sample=SLIDE_SAMPLES),
