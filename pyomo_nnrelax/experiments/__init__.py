"""Experiments built on the library: data, benchmark functions, difficulty measurements
through the Pyomo block, the refinement loop, sweeps over regularizers and plots."""
