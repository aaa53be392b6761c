rule folds:
    """Patient-grouped cross-validation folds with an inner validation split."""
    input:
        sheet=SHEET_PATH,
        table=[config["folds"]["table"]] if config["folds"].get("table") else [],
    output:
        folds="results/folds/folds.tsv",
    params:
        scheme=config["folds"]["scheme"],
        n_folds=config["folds"].get("n_folds", 0),
        seed=config["folds"].get("seed"),
        val_patients=config["folds"].get("val_patients", 1),
        table=f"--table {config['folds']['table']}" if config["folds"].get("table") else "",
        # scheme 'reference': the published folds of the dataset (shipped with genedml)
        reference=(
            (f"--dataset {config['dataset']} " if config.get("dataset") else "")
            + f"--reference-set {config['folds'].get('reference_set', 'legacy')}"
            if config["folds"]["scheme"] == "reference"
            else ""
        ),
    log:
        "results/logs/folds.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/genedml.yaml"
    shell:
        "genedml folds --sheet {input.sheet} --out {output.folds} --scheme {params.scheme} "
        "--n-folds {params.n_folds} --seed {params.seed} --val-patients {params.val_patients} "
        "{params.table} {params.reference} > {log} 2>&1"
