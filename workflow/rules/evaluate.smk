rule evaluate:
    """Per-section, per-fold and per-gene metrics of one head; per-section predictions for scanpy."""
    input:
        predictions=expand("results/heads/{{head}}/fold{fold}/predictions.h5ad", fold=FOLDS),
        thumbnails=expand("results/thumbnails/{sample}.json", sample=TEST_SAMPLES),
    output:
        summary="results/metrics/{head}/summary.tsv",
        per_section=report(
            "results/metrics/{head}/per_section.tsv",
            caption="../report/per_section.rst",
            category="Metrics",
            subcategory="{head}",
            labels={"head": "{head}", "table": "per section"},
        ),
        per_fold="results/metrics/{head}/per_fold.tsv",
        per_gene=report(
            "results/metrics/{head}/per_gene.tsv",
            caption="../report/per_gene.rst",
            category="Metrics",
            subcategory="{head}",
            labels={"head": "{head}", "table": "per gene"},
        ),
        per_gene_section="results/metrics/{head}/per_gene_section.tsv",
        gene_sets="results/metrics/{head}/gene_sets.json",
        # one folder of every held-out section's .h5ad: a list of files per head would make each file
        # look-up of the plan as slow as the sample count
        exports=directory("results/predictions/{head}"),
    params:
        settings=RUN.flags(EvaluateSpec, TargetSpec),
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
        thumbnails=lambda wildcards, input: [f"{s}={t}" for s, t in zip(TEST_SAMPLES, input.thumbnails)],
    log:
        "results/logs/evaluate/{head}.log",
    benchmark:
        "results/benchmarks/evaluate/{head}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on each retry
        runtime=20,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml evaluate --head {wildcards.head:q} --predictions {input.predictions:q} "
        "--out-dir {params.out_dir:q} --export-dir {output.exports:q} {params.settings} "
        "--thumbnails {params.thumbnails:q} > {log:q} 2>&1"


rule summarize:
    """One table of every head's metrics: head, metric, mean, std, n_folds."""
    input:
        summaries=expand("results/metrics/{head}/summary.tsv", head=HEADS),
    output:
        summary=report(
            "results/metrics/summary.tsv",
            caption="../report/summary.rst",
            category="Metrics",
        ),
    log:
        "results/logs/summarize.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml summarize --summaries {input.summaries:q} --out {output.summary:q} > {log:q} 2>&1"
