rule folds:
    """Patient-grouped cross-validation folds with an inner validation split."""
    input:
        sheet=RUN.sheet_path,
        table=[config["folds"]["table"]] if config["folds"]["table"] else [],
    output:
        folds="results/folds/folds.tsv",
    params:
        settings=RUN.flags(FoldSpec),
        # scheme 'reference': the published folds of the dataset (default: the sample sheet's dataset column)
        dataset=["--dataset", config["dataset"]] if config["dataset"] else [],
    log:
        "results/logs/folds.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml folds --sheet {input.sheet:q} --out {output.folds:q} {params.settings} "
        "{params.dataset:q} > {log:q} 2>&1"
