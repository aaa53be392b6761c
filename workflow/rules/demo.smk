rule demo_data:
    """One synthetic section in the HEST-1k layout (image-driven expression)."""
    output:
        **hest_outputs(DEMO_DIR),
    params:
        patient=lambda wildcards: RUN.patient[wildcards.sample],
        settings=RUN.flags(DemoSpec),
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
        "genedml demo-data --sample {wildcards.sample:q} --patient {params.patient:q} "
        "--out-dir {params.out_dir:q} {params.settings} > {log:q} 2>&1"
