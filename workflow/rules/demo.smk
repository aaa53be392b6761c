rule demo_data:
    """One synthetic section in the HEST-1k layout (image-driven expression)."""
    output:
        slide=f"{DEMO_DIR}/wsis/{{sample}}.tif",
        st=f"{DEMO_DIR}/st/{{sample}}.h5ad",
        metadata=f"{DEMO_DIR}/metadata/{{sample}}.json",
    params:
        patient=lambda wildcards: PATIENT[wildcards.sample],
        seed=config.get("demo", {}).get("seed", 0),
        n_genes=config.get("demo", {}).get("n_genes", 300),
        width_um=config.get("demo", {}).get("width_um", 2000),
        height_um=config.get("demo", {}).get("height_um", 1400),
        mpp=config.get("demo", {}).get("mpp", 0.5),
        out_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output.slide)),
    log:
        "results/logs/demo_data/{sample}.log",
    benchmark:
        "results/benchmarks/demo_data/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml demo-data --sample {wildcards.sample} --patient {params.patient} "
        "--out-dir {params.out_dir} --seed {params.seed} --n-genes {params.n_genes} "
        "--width-um {params.width_um} --height-um {params.height_um} --mpp {params.mpp} > {log} 2>&1"
