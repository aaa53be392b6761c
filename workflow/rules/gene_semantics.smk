rule gene_semantics:
    """Text embeddings of the predicted genes (symbols or user descriptions), for heads with gene-semantic queries."""
    input:
        genes="results/genes/genes.tsv",
        descriptions=lambda wildcards: gene_semantics_config()["descriptions"] or [],
    output:
        semantics=GENE_SEMANTICS,
    params:
        model=gene_semantics_config()["model"],
        template=lambda wildcards: gene_semantics_config()["template"],  # "{symbol}" is not a wildcard
        missing=gene_semantics_config()["missing_description"],
        descriptions=(
            f"--descriptions {gene_semantics_config()['descriptions']}"
            if gene_semantics_config()["descriptions"]
            else ""
        ),
    log:
        "results/logs/gene_semantics.log",
    benchmark:
        "results/benchmarks/gene_semantics.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml gene-semantics --genes {input.genes} --out {output.semantics} --model {params.model:q} "
        "{params.descriptions} --template {params.template:q} --missing-description {params.missing} "
        "--threads {threads} > {log} 2>&1"
