rule sample:
    input:
        deps("sample"),
    output:
        "results/samples/{exp}/{tag}.npz",
    log:
        "logs/sample/{exp}_{tag}.log",
    benchmark:
        "logs/benchmarks/sample/{exp}_{tag}.tsv"
    params:
        cmd=cmd("sample"),
    shell:
        "{params.cmd} > {log} 2>&1"


rule mesh:
    input:
        deps("mesh"),
    output:
        directory("results/meshes/{exp}/{tag}"),
    log:
        "logs/mesh/{exp}_{tag}.log",
    benchmark:
        "logs/benchmarks/mesh/{exp}_{tag}.tsv"
    params:
        cmd=cmd("mesh"),
    shell:
        "{params.cmd} > {log} 2>&1"


rule render:
    input:
        deps("render"),
    output:
        directory("results/renders/{exp}/{tag}"),
    log:
        "logs/render/{exp}_{tag}.log",
    benchmark:
        "logs/benchmarks/render/{exp}_{tag}.tsv"
    params:
        cmd=cmd("render"),
    shell:
        "{params.cmd} > {log} 2>&1"
