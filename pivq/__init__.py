"""pivq: permutation-invariant discrete representation learning (PI-VQ), the reference pipeline.

Importing the package is cheap (no torch): Snakemake imports ``pivq.config`` at parse time.
"""

__version__ = "0.1.0"
