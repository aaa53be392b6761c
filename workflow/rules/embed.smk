rule embed:
    """Frozen encoder over local and neighbour tiles, once per sample and encoder (the GPU step)."""
    input:
        geometry="results/tiles/{sample}.npz",
        slide=lambda wildcards: sample_files(wildcards)["slide"],
        # a weights file is an input too: replacing it in place (same path) re-embeds every sample
        weights=lambda wildcards: [config["encoder"]["weights"]] if config["encoder"].get("weights") else [],
    output:
        features=directory("results/features/{encoder}/{sample}.zarr"),
    params:
        encoder=encoder_identity(),
    log:
        "results/logs/embed/{encoder}/{sample}.log",
    benchmark:
        "results/benchmarks/embed/{encoder}/{sample}.tsv"
    threads: 2
    resources:
        # more memory and time on each retry (--retries): attempt is 1, 2, 3, ...
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
        # run-time knobs live in resources so that changing them never re-embeds
        batch_size=config["encoder"].get("batch_size", 64),
        loader_workers=config["encoder"].get("num_workers", 0),
        device=config["encoder"].get("device", "auto"),
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml embed --geometry {input.geometry} --slide {input.slide} --encoder {params.encoder:q} "
        "--out {output.features} --batch-size {resources.batch_size} --num-workers {resources.loader_workers} "
        "--device {resources.device} --threads {threads} > {log} 2>&1"
