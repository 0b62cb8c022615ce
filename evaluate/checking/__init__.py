"""Checking a candidate before any training: parse the reply, screen the AST (static policy), run it in the
sandbox on synthetic log-probs (runtime checks), characterise it (profile) and fingerprint it.

``lossforge.evaluate.check`` (``checker.check``) chains the layers; each is usable on its own.
"""
