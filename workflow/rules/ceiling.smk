rule ceiling:
    """Per-gene ceiling of one encoder's embeddings: Geary's C of each gene's targets on the kNN graph of the
    spots' local embeddings, from each fold's non-test sections only (docs/report.md, "Per-gene ceiling")."""
    input:
        folds="results/folds/folds.tsv",
        # every section's features (of this encoder) and targets, through one index
        inputs=RUN.training_inputs_of_encoder("{encoder}"),
        genes="results/genes/genes.tsv",
    output:
        table="results/ceiling/{encoder}/per_gene.tsv",
    params:
        settings=RUN.flags(CeilingSpec),
    log:
        "results/logs/ceiling/{encoder}.log",
    benchmark:
        "results/benchmarks/ceiling/{encoder}.tsv"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on each retry
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml ceiling --folds {input.folds:q} --inputs {input.inputs:q} --genes {input.genes:q} "
        "{params.settings} --out {output.table:q} > {log:q} 2>&1"


rule ceiling_figure:
    """Each head's per-gene mean PCC against the ceiling score of its encoder's embeddings (one panel a head)."""
    input:
        ceiling="results/ceiling/{encoder}/per_gene.tsv",
        # the heads trained on this encoder's features (a mean predictor's PCC is undefined: no panel)
        per_gene=lambda wildcards: [
            f"results/metrics/{h}/per_gene.tsv" for h in RUN.heads_of_encoder(wildcards.encoder, controls=False)
        ],
    output:
        figure=report(
            "results/figures/ceiling_{encoder}.png",
            caption="../report/ceiling.rst",
            category="Figures",
            labels={"figure": "per-gene ceiling", "encoder": "{encoder}"},
        ),
    params:
        per_gene=lambda wildcards, input: [
            f"{h}={p}" for h, p in zip(RUN.heads_of_encoder(wildcards.encoder, controls=False), input.per_gene)
        ],
        labels=lambda wildcards: [
            f"{h}={RUN.head_report[h]['label']}" for h in RUN.heads_of_encoder(wildcards.encoder, controls=False)
        ],
    log:
        "results/logs/ceiling_figure/{encoder}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml ceiling-figure --ceiling {input.ceiling:q} --per-gene {params.per_gene:q} "
        "--labels {params.labels:q} --out {output.figure:q} > {log:q} 2>&1"
