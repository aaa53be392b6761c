rule gene_semantics:
    """Text embeddings of the predicted genes (symbols or user descriptions), for heads with gene-semantic queries."""
    input:
        genes="results/genes/genes.tsv",
        descriptions=[config["gene_semantics"]["descriptions"]] if config["gene_semantics"]["descriptions"] else [],
        embeddings=[config["gene_semantics"]["embeddings"]] if config["gene_semantics"]["embeddings"] else [],
        embedding_genes=(
            [config["gene_semantics"]["embedding_genes"]] if config["gene_semantics"]["embedding_genes"] else []
        ),
    output:
        semantics=GENE_SEMANTICS,
    params:
        settings=RUN.flags(GeneSemanticsSpec),
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
        "genedml gene-semantics --genes {input.genes:q} --out {output.semantics:q} {params.settings} "
        "--threads {threads} > {log:q} 2>&1"
