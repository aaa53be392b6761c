rule training_inputs:
    """Index every cross-validation section's features (of one encoder) and targets once, for the train jobs."""
    input:
        sheet=RUN.sheet_path,
        features=lambda wildcards: RUN.feature_stores(wildcards.encoder),
        targets=[RUN.targets_path(s) for s in SAMPLES],
    output:
        index=RUN.training_inputs_of_encoder("{encoder}"),
    params:
        # patterns for the CLI (a function: Snakemake would fill a string's {sample} as a wildcard)
        features=lambda wildcards: RUN.features_path("{sample}", wildcards.encoder),
        targets=lambda wildcards: RUN.targets_path("{sample}"),
    localrule: True
    log:
        "results/logs/training_inputs/{encoder}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml training-inputs --sheet {input.sheet:q} --features-pattern {params.features:q} "
        "--targets-pattern {params.targets:q} --out {output.index:q} > {log:q} 2>&1"


rule train:
    """Fit one head on one fold's training sections; predict its held-out sections."""
    input:
        folds="results/folds/folds.tsv",
        # every section's features and targets, through one index (planning stays linear in the samples)
        inputs=lambda wildcards: RUN.training_inputs_of(wildcards.head),
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
        "--fold {wildcards.fold:q} --inputs {input.inputs:q} {params.spot_images} "
        "--out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"
