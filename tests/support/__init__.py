"""Helpers shared by the test files: an independent reference for ReLU networks, solving a
model that must reach optimality, exporting torch modules, and gradient checks."""
