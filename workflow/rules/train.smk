rule train:
    """Fit one head on one fold's training sections; predict its held-out sections."""
    input:
        folds="results/folds/folds.tsv",
        features=[RUN.features_path(s) for s in SAMPLES],
        targets=[RUN.targets_path(s) for s in SAMPLES],
        gene_semantics=lambda wildcards: RUN.gene_semantics_file(wildcards.head) or [],
        # only for a head that trains an image encoder on the pixels (spot_encoder resnet18)
        spot_images=lambda wildcards: RUN.spot_image_inputs(wildcards.head),
        spot_weights=lambda wildcards: RUN.spot_encoder_weights(wildcards.head),
    output:
        predictions="results/heads/{head}/fold{fold}/predictions.h5ad",
        facts="results/heads/{head}/fold{fold}/fold.json",
    params:
        # a head's keys depend on its type, so its slice travels as JSON (`report` left out: never retrains)
        head=lambda wildcards: RUN.head_params(wildcards.head),
        features=RUN.sample_pairs("features"),
        targets=RUN.sample_pairs("targets"),
        spot_images=lambda wildcards: RUN.spot_image_flag(wildcards.head),
        out_dir=lambda wildcards, output: os.path.dirname(output.predictions),
    log:
        "results/logs/train/{head}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train/{head}/fold{fold}.tsv"
    threads: 2
    resources:
        # more memory and time on each retry (--retries): attempt is 1, 2, 3, ...
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml train --head {wildcards.head:q} --params {params.head:q} --folds {input.folds:q} "
        "--fold {wildcards.fold:q} --features {params.features:q} --targets {params.targets:q} {params.spot_images} "
        "--out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"
