rule embed:
    """Frozen encoder over local and neighbour tiles, once per sample and encoder (the GPU step)."""
    input:
        geometry="results/tiles/{sample}.npz",
        slide=lambda wildcards: sample_files(wildcards)["slide"],
        # a weights file is an input too: replacing it in place (same path) re-embeds every sample
        weights=lambda wildcards: RUN.encoder_weights_input(wildcards.encoder),
    output:
        features=directory("results/features/{encoder}/{sample}.zarr"),
    params:
        encoder=RUN.encoder_flags(),
    log:
        "results/logs/embed/{encoder}/{sample}.log",
    benchmark:
        "results/benchmarks/embed/{encoder}/{sample}.tsv"
    threads: 2
    resources:
        # more memory and time on each retry (--retries): attempt is 1, 2, 3, ...
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
        # the encoder's run-time knobs (schema: x-runtime) live in resources, so changing them never re-embeds
        batch_size=lambda wildcards: RUN.embed_runtime(wildcards.encoder)["batch_size"],
        loader_workers=lambda wildcards: RUN.embed_runtime(wildcards.encoder)["num_workers"],
        device=lambda wildcards: RUN.embed_runtime(wildcards.encoder)["device"],
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml embed --geometry {input.geometry:q} --slide {input.slide:q} {params.encoder} "
        "--out {output.features:q} --batch-size {resources.batch_size:q} --num-workers {resources.loader_workers:q} "
        "--device {resources.device:q} --threads {threads} > {log:q} 2>&1"


rule spot_images:
    """Every spot's local crop as uint8 pixels, once per sample, for heads that train an image encoder on them."""
    input:
        geometry="results/tiles/{sample}.npz",
        slide=lambda wildcards: sample_files(wildcards)["slide"],
    output:
        images=directory("results/spot_images/{sample}.zarr"),
    params:
        spot_images=RUN.flags(SpotImageSpec),
    log:
        "results/logs/spot_images/{sample}.log",
    benchmark:
        "results/benchmarks/spot_images/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml spot-images --geometry {input.geometry:q} --slide {input.slide:q} {params.spot_images} "
        "--out {output.images:q} > {log:q} 2>&1"
