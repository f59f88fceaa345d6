rule classifier:
    input:
        deps("classifier"),
    output:
        "results/eval/{dataset}_classifier.pt",
    log:
        "logs/classifier/{dataset}.log",
    benchmark:
        "logs/benchmarks/classifier/{dataset}.tsv"
    params:
        cmd=cmd("classifier"),
    shell:
        "{params.cmd} > {log} 2>&1"


rule evaluate:
    input:
        deps("evaluate"),
    output:
        "results/eval/{exp}.json",
    log:
        "logs/evaluate/{exp}.log",
    benchmark:
        "logs/benchmarks/evaluate/{exp}.tsv"
    params:
        cmd=cmd("evaluate"),
    shell:
        "{params.cmd} > {log} 2>&1"


rule progress:
    input:
        deps("progress"),
    output:
        report("results/eval/{exp}_progress.tsv", caption="../report/progress.rst", category="Evaluation"),
    log:
        "logs/progress/{exp}.log",
    benchmark:
        "logs/benchmarks/progress/{exp}.tsv"
    params:
        cmd=cmd("progress"),
    shell:
        "{params.cmd} > {log} 2>&1"


rule table:
    input:
        deps("table"),
    output:
        csv=report("results/tables/{table}.csv", caption="../report/table.rst", category="Tables"),
        md="results/tables/{table}.md",
    log:
        "logs/table/{table}.log",
    benchmark:
        "logs/benchmarks/table/{table}.tsv"
    params:
        cmd=cmd("table"),
        caption=caption("table"),
    shell:
        "{params.cmd} > {log} 2>&1"
