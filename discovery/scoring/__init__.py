"""Scores you can trust: the run's search and held-out seeds (``seeds``), multi-seed scoring with common random
numbers (``multi_seed``), the statistics (``statistics``: mean, Student-t intervals, paired differences and
verdicts), successive halving (``fidelity``) and the confirmation of the winners (``confirm``)."""
