"""Hostile fixture (static policy off): writes garbage into the fork server's liveness pipe and the resource
tracker's pipe, which every child of the fork server inherits. Were they left open, the server would stop
("Not at EOF?") and the caller's next run could not start."""

from multiprocessing import forkserver, resource_tracker

import torch.nn.functional as F

NAME = "service_pipes"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    import os

    for fd in (forkserver._forkserver._forkserver_alive_fd, resource_tracker._resource_tracker._fd):
        try:
            os.write(fd, b"garbage\n" * 64)
        except (OSError, TypeError):
            pass
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
