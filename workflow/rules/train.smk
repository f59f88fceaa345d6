rule train:
    input:
        deps("train"),
    output:
        model="results/runs/{exp}/model.pt",
        metrics="results/runs/{exp}/metrics.tsv",
        snapshots=directory("results/runs/{exp}/snapshots"),
    log:
        "logs/train/{exp}.log",
    benchmark:
        "logs/benchmarks/train/{exp}.tsv"
    threads: workflow.cores
    resources:
        gpu=1,
    params:
        cmd=cmd("train"),
    shell:
        "{params.cmd} > {log} 2>&1"
