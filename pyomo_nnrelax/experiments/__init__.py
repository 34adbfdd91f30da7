"""The studies built on the library, used by ``benchmarks/`` and the tests: the paper's test
functions (:mod:`.functions`) and the two-stage facility-location study (:mod:`.cflp`
instances and their recourse MILP, :mod:`.scenarios` cached samples, :mod:`.twostage` the
first-stage MILP with a quantile network)."""
