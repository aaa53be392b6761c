rule select_genes:
    """The genes to predict: a fixed list, or the top N by total counts over the cross-validation samples."""
    input:
        st=[RUN.sample_files(s)["st"] for s in SAMPLES],
        # a gene-list file is an input: editing it in place chooses the genes again
        gene_list=RUN.gene_list_file(),
    output:
        genes="results/genes/genes.tsv",
    params:
        samples=SAMPLES,
        settings=RUN.flags(GeneSpec, SpotFilterSpec),
    log:
        "results/logs/select_genes.log",
    benchmark:
        "results/benchmarks/select_genes.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,  # grows on each retry
        runtime=20,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml genes --st {input.st:q} --samples {params.samples:q} --out {output.genes:q} "
        "{params.settings} > {log:q} 2>&1"


rule targets:
    """Regression targets of one sample (recipe from config, recorded in the output)."""
    input:
        st=lambda wildcards: sample_files(wildcards)["st"],
        genes="results/genes/genes.tsv",
    output:
        targets="results/targets/{sample}.h5ad",
    params:
        settings=RUN.flags(TargetSpec, SpotFilterSpec),
    log:
        "results/logs/targets/{sample}.log",
    benchmark:
        "results/benchmarks/targets/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml targets --sample {wildcards.sample:q} --st {input.st:q} --genes {input.genes:q} "
        "{params.settings} --out {output.targets:q} > {log:q} 2>&1"
