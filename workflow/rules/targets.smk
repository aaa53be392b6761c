rule select_genes:
    """The genes to predict: a fixed list, or the top N by total counts over the cross-validation samples."""
    input:
        st=[st_file(s) for s in SAMPLES],
    output:
        genes="results/genes/genes.tsv",
    params:
        samples=" ".join(SAMPLES),
        n_top=config["genes"].get("n_top", 250),
        gene_list=(
            f"--gene-list {config['genes']['list']}" if config["genes"].get("list") else ""
        ),
        min_spot_fraction=config["genes"].get("min_spot_fraction", 0.0),
        missing=config["genes"].get("missing", "drop"),
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
        "genedml genes --st {input.st} --samples {params.samples} --out {output.genes} "
        "--n-top {params.n_top} {params.gene_list} --min-spot-fraction {params.min_spot_fraction} "
        "--missing {params.missing} > {log} 2>&1"


rule targets:
    """Regression targets of one sample (recipe from config, recorded in the output)."""
    input:
        st=lambda wildcards: sample_files(wildcards)["st"],
        genes="results/genes/genes.tsv",
    output:
        targets="results/targets/{sample}.h5ad",
    params:
        recipe=config["targets"].get("recipe", "reference"),
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
        "genedml targets --sample {wildcards.sample} --st {input.st} --genes {input.genes} "
        "--recipe {params.recipe} --out {output.targets} > {log} 2>&1"
