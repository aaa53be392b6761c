rule report_markdown:
    """The run's report: headline metrics, per-section scores, run facts."""
    input:
        summary="results/metrics/summary.tsv",
        per_section=expand("results/metrics/{head}/per_section.tsv", head=HEADS),
        folds="results/folds/folds.tsv",
        genes="results/genes/genes.tsv",
        store=features_path(SAMPLES[0]),
    output:
        report=report("results/report.md", caption="../report/report.rst", category="Report"),
    params:
        per_section=" ".join(f"{h}=results/metrics/{h}/per_section.tsv" for h in HEADS),
        recipe=config["targets"].get("recipe", "reference"),
    log:
        "results/logs/report_markdown.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml report --out {output.report} --summary {input.summary} "
        "--per-section {params.per_section} --folds {input.folds} --genes {input.genes} "
        "--features-store {input.store} --recipe {params.recipe} > {log} 2>&1"
