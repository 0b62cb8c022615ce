"""Hostile fixture: ``import torch as __builtins__`` makes every bare name of the module resolve in torch.

Functions defined after the import take torch's namespace as their builtins, so the bare name ``os`` is
``torch.os``. It passed the old denylist policy: import aliases skipped the dunder check.
"""

import torch as __builtins__  # noqa: F401 - the alias is the attack
import torch.nn.functional as F

NAME = "import_alias_builtins"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    os.system("touch pwned_alias.txt")  # noqa: F821 - `os` resolves as torch.os
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
