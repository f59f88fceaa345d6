rule download:
    output:
        directory("data/raw/download/{dataset}"),
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "logs/benchmarks/download/{dataset}.tsv"
    params:
        cmd=cmd("download"),
    shell:
        "{params.cmd} > {log} 2>&1"


rule synth_chairs:
    output:
        directory("data/raw/synth/{dataset}"),
    log:
        "logs/synth_chairs/{dataset}.log",
    benchmark:
        "logs/benchmarks/synth_chairs/{dataset}.tsv"
    params:
        cmd=cmd("synth_chairs"),
    shell:
        "{params.cmd} > {log} 2>&1"


rule prepare:
    input:
        deps("prepare"),
    output:
        "data/processed/{dataset}.h5",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare/{dataset}.tsv"
    params:
        cmd=cmd("prepare"),
    shell:
        "{params.cmd} > {log} 2>&1"
