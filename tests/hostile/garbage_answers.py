"""Hostile fixture (static policy off): writes forged frames and garbage into every descriptor it has open.

The process that runs the candidate answers the checker through a pipe; a candidate can write to it too. It
may only ever change what the checker learns about its own outputs, and a frame that breaks the protocol must
end the check as a rejection, not crash the checker or pass.
"""

import os
import struct

import torch.nn.functional as F

NAME = "garbage_answers"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    forged = b'{"compiled": true, "isolation": {}, "returned": "Tensor"}'
    for name in os.listdir("/proc/self/fd"):
        for payload in (struct.pack(">I", len(forged)) + forged, struct.pack(">I", 7) + b"{not js", b"\xff" * 64):
            try:
                os.write(int(name), payload)
            except OSError:
                pass
    margin = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * margin)
