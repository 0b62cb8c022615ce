"""Retraining a discovered loss at full scale and evaluating the result (docs/DESIGN.md, "Review and retrain").

One module per concept:

- ``recipe``: YAML recipes (``recipes/lora.yaml``, ``recipes/full.yaml``) -> ``DPOConfig`` and ``LoraConfig``
  fields, ``--set`` overrides, validation before anything is launched;
- ``data``: the train and held-out pairs (the dataset's test split, or one carved out with a fixed seed);
- ``devices``: what the machine offers (GPUs, cores, bitsandbytes, trackers) and what a run may ask of it;
- ``launcher``: the ``accelerate launch`` command line (DDP, FSDP or DeepSpeed; CPU DDP over gloo), run with
  an environment without secrets, its output in ``OUT/train.log``, under a timeout;
- ``processes``: finding and stopping every process of a launch, ranks in sessions of their own included;
- ``entry``: the training entry point every rank runs (setup -> train -> cleanup);
- ``lockdown``: what each rank applies before the candidate's code first runs (audit hook, no core files), and
  its watch on the ``lossforge retrain`` process;
- ``evaluation`` and ``harness``: held-out preference accuracy, the judge, lm-eval;
- ``model_card``: the output's README.md;
- ``config``: ``RetrainConfig`` and ``LossSpec``, what one retrain is asked to do;
- ``preparation``: the checks and refusals before anything is launched (the policy applied again, the recipe
  resolved against the machine), giving a ``Prepared`` retrain;
- ``errors``: ``CandidateRejected``, ``TrainingFailed``, ``TrainingTimeout``;
- ``pipeline``: ``retrain(config)``, the whole of it behind one call, baseline included.
"""

from __future__ import annotations
