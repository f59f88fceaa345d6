rule fit_image:
    output:
        directory("results/fit_image/{variant}"),
    log:
        "logs/fit_image/{variant}.log",
    benchmark:
        "logs/benchmarks/fit_image/{variant}.tsv"
    params:
        cmd=cmd("fit_image"),
    shell:
        "{params.cmd} > {log} 2>&1"


rule figure:
    input:
        deps("figure"),
    output:
        report("results/figures/{fig}.png", caption="../report/figure.rst", category="Figures"),
    log:
        "logs/figure/{fig}.log",
    benchmark:
        "logs/benchmarks/figure/{fig}.tsv"
    params:
        cmd=cmd("figure"),
        caption=caption("figure"),
    shell:
        "{params.cmd} > {log} 2>&1"
