"""Linear programs in HiGHS (highspy): the one solver wrapper, optimisation-based bound
tightening, and the LP relaxation at fixed inputs projected onto the layer outputs.

Nothing here imports Pyomo: the trainer's default LP-gap path runs on these modules alone.
"""
