"""``python -m pyomo_nnrelax.cli``: the ``nnrelax`` command."""

from . import main

main()
