"""Scores you can trust: training a candidate on every search seed with common random numbers
(``seed_training``), the run config a candidate trains with (``train_config``), successive halving
(``fidelity``), the confirmation of the winners on held-out seeds (``confirm``) and the multi-seed evidence as
prompts and summaries show it (``stats_views``). The seeds themselves are ``discovery.seeds``; what the scores
mean, ``discovery.stats``."""
