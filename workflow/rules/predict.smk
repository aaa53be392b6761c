rule predict:
    """Apply a head's trained fold models to a section without counts (config `predict`)."""
    input:
        features=lambda wildcards: RUN.features_path(wildcards.sample, RUN.encoder_of(wildcards.head)),
        models=expand("results/heads/{{head}}/fold{fold}/fold.json", fold=FOLDS),
        reference=lambda wildcards: RUN.features_path(SAMPLES[0], RUN.encoder_of(wildcards.head)),
        spot_images=lambda wildcards: RUN.spot_image_inputs(wildcards.head, [wildcards.sample]),
        st=lambda wildcards: sample_files(wildcards)["st"],
        ood=lambda wildcards: RUN.ood_table(wildcards.sample),
    output:
        predictions="results/predict/{head}/{sample}.h5ad",
    params:
        models=lambda wildcards, input: [os.path.dirname(p) for p in input.models],
        spot_images=lambda wildcards, input: (["--spot-images", *input.spot_images] if input.spot_images else []),
    wildcard_constraints:
        # none configured: matches nothing
        sample="|".join(re.escape(s) for s in PREDICT_SAMPLES + SLIDE_SAMPLES) or "(?!)",
    log:
        "results/logs/predict/{head}/{sample}.log",
    benchmark:
        "results/benchmarks/predict/{head}/{sample}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml predict --head {wildcards.head:q} --models {params.models:q} --sample {wildcards.sample:q} "
        "--features {input.features:q} --reference-features {input.reference:q} {params.spot_images:q} "
        "--st {input.st:q} --ood {input.ood:q} --out {output.predictions:q} --threads {threads} > {log:q} 2>&1"
