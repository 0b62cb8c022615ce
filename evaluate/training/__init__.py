"""Training and scoring one candidate: the configuration (``config``), the parent side that launches two
isolated processes per beta (``launcher``), the training process that runs the candidate and hands back its
LoRA adapter (``worker``), the scoring process that never runs the candidate and scores that adapter
(``scorer``), TRL's ``DPOTrainer`` with the candidate as its loss (``candidate_trainer``), the shared reference
log-probs (``reference_cache``), the result record (``result``) and what several trainings add up to
(``combine``).
"""
