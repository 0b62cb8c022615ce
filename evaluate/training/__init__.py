"""Training and scoring one candidate: the configuration (``config``), the parent side that launches an
isolated worker per beta (``launcher``), the child side (``worker``), TRL's ``DPOTrainer`` with the candidate
as its loss (``candidate_trainer``), the shared reference log-probs (``reference_cache``) and the result record.
"""
