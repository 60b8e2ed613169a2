"""Report generators: each module is a command that writes tables and figures under ``docs/benchmarks``.

``python -m monai_dpe.reports.benchmark`` (``make benchmark``) times the backends and the end-to-end
runs; ``python -m monai_dpe.reports.quality`` (``make quality``) draws the evaluation's charts and
crops; ``python -m monai_dpe.reports.curves`` plots validation curves from training logs. They sit
on the top floor: they use the library as a user would, and nothing in the library uses them.
"""
