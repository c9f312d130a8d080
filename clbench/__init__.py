"""clbench: a continual-learning benchmarking suite.

The code lives in the top-level folders ``benchmarks/``, ``strategies/``, ``protocols/`` and
``reports/``, installed as the subpackages ``clbench.benchmarks``, ``clbench.strategies``,
``clbench.protocols`` and ``clbench.reports``.
"""

__version__ = "0.1.0"
