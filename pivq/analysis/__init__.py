"""Analyses of trained codes: bottleneck capacity (eqs. 2 and 4) and the attribute probe (section 3.8).

Submodules are imported explicitly (``from pivq.analysis.capacity import ...``) so that the capacity
CLI does not pay for importing scikit-learn.
"""
