"""Hostile fixture: connects to a loopback listener (tests replace the port 1 by their listener's)."""

import socket

import torch.nn.functional as F

NAME = "socket_connect"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    socket.create_connection(("127.0.0.1", 1), timeout=1).sendall(b"x")
    return -F.logsigmoid(
        beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))
    )
