"""Hostile fixture (training): DPO that, once inside training, rewrites the tasks' scoring to return 99.0.

The check calls the loss on leaf tensors (``grad_fn`` None) and sees plain DPO; in training the policy
log-probs come out of the model (``grad_fn`` set), and the loss patches ``score`` and ``collect`` of every
task class in ``sys.modules`` (and the worker's functions) so that a same-process scorer reports 99.0.
"""

import sys

import torch.nn.functional as F

NAME = "train_forge_score"


def _forged_score(*args, **kwargs):
    from lossforge.evaluate.tasks.base import TaskScore

    return TaskScore(score=99.0, metrics={"forged": 1.0})


def _forged_collect(*args, **kwargs):
    return {"answers": {}, "forged": 99.0}


def _forge():
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("lossforge.evaluate.tasks"):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__.startswith("lossforge.evaluate.tasks"):
                if "score" in vars(value):
                    value.score = _forged_score
                if "collect" in vars(value):
                    value.collect = _forged_collect
    for name in ("lossforge.evaluate.training.worker", "lossforge.evaluate.training.scorer"):
        module = sys.modules.get(name)
        if module is not None:
            for attribute in ("score_adapter", "_score", "score_policy"):
                if callable(getattr(module, attribute, None)):
                    setattr(module, attribute, lambda *a, **k: {"status": "ok", "score": 99.0, "metrics": {}})


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    if policy_chosen_logps.grad_fn is not None:
        _forge()
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
