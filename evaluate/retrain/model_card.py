"""The model card (``README.md``) of a retrained model, replacing the card TRL or PEFT writes on save.

It says what a reader needs to trust or reproduce the model: the base model and dataset, the loss with its
citation and lineage (the candidate file's ``NAME``/``DESCRIPTION``/``ORIGIN``/``PARENTS``), the
hyper-parameters as trained (the resolved recipe), how training ran, and the evaluation results, side by
side with the baseline's where one was retrained.
"""

from __future__ import annotations

from typing import Any

import yaml

_EXPLAINED = {
    "pref_accuracy": "held-out preference accuracy (implicit-reward margin > 0; ties count half)",
    "margin": "mean held-out margin (pc - rc) - (pr - rr), nats",
    "chosen_logratio": "mean log pi/ref of the chosen answers",
    "rejected_logratio": "mean log pi/ref of the rejected answers",
    "judge_score": "mean 1-10 grade of a judge LLM (MT-Bench style)",
}


def _front_matter(metrics: dict[str, Any], lora: bool) -> str:
    data = {
        "base_model": metrics["model"],
        "datasets": [metrics["dataset"]],
        "library_name": "peft" if lora else "transformers",
        "tags": ["lossforge", "dpo", "trl", "preference-optimization"],
    }
    return "---\n" + yaml.safe_dump(data, sort_keys=False) + "---\n"


def _metric_rows(metrics: dict[str, float], baseline: dict[str, float] | None, baseline_name: str | None) -> list[str]:
    if baseline is None:
        rows = ["| metric | value |", "|---|---|"]
        rows += [f"| `{k}` | {v:.4f} |" for k, v in sorted(metrics.items())]
    else:
        rows = [f"| metric | this model | {baseline_name} (baseline) | difference |", "|---|---|---|---|"]
        for key in sorted(set(metrics) | set(baseline)):
            mine, theirs = metrics.get(key), baseline.get(key)
            diff = f"{mine - theirs:+.4f}" if mine is not None and theirs is not None else "-"
            show = [f"{v:.4f}" if v is not None else "-" for v in (mine, theirs)]
            rows.append(f"| `{key}` | {show[0]} | {show[1]} | {diff} |")
    notes = [f"- `{k}`: {_EXPLAINED[k]}" for k in sorted(set(metrics) & set(_EXPLAINED))]
    return [*rows, "", *notes]


def render(
    metrics: dict[str, Any], *, loss_meta: dict[str, Any], recipe: dict[str, Any], baseline: dict[str, Any] | None
) -> str:
    """The card's Markdown. ``metrics`` is ``metrics.json``'s content; ``baseline`` the baseline's, or None."""
    lora = recipe.get("lora") is not None
    parents = loss_meta.get("PARENTS") or []
    training = metrics.get("training", {})
    lines = [
        _front_matter(metrics, lora),
        f"# {metrics['candidate']} on {metrics['model']}",
        "",
        (
            f"{'A LoRA adapter' if lora else 'A fully fine-tuned model'} trained from `{metrics['model']}` on "
            f"`{metrics['dataset']}` with the preference-optimization loss `{metrics['candidate']}` through TRL's "
            "`DPOTrainer` (the loss replaces DPO's), by `lossforge retrain`."
        ),
        "",
        "## The loss",
        "",
        f"- name: `{loss_meta.get('NAME') or metrics['candidate']}`",
        f"- description: {loss_meta.get('DESCRIPTION') or '-'}",
        f"- origin (citation or proposer): {loss_meta.get('ORIGIN') or '-'}",
        f"- parents (lineage): {', '.join(f'`{p}`' for p in parents) if parents else 'none'}",
        "- code: [`loss.py`](loss.py)",
        "",
        "## Training",
        "",
        f"Recipe `{recipe.get('recipe')}`; the resolved fields are in [`recipe.yaml`](recipe.yaml).",
        "",
        "```yaml",
        yaml.safe_dump({k: v for k, v in recipe.items() if k not in ("recipe", "notes")}, sort_keys=True).rstrip(),
        "```",
        "",
    ]
    for key in ("distributed", "optimizer", "precision", "gradient_checkpointing", "global_steps", "train_seconds"):
        if key in training:
            value = training[key]
            shown = f"{value:.1f}" if isinstance(value, float) else str(value)
            lines.append(f"- {key.replace('_', ' ')}: {shown}")
    lines += [f"- {note}" for note in recipe.get("notes", [])]
    lines += ["", "## Evaluation", "", metrics.get("held_out", ""), ""]
    lines += _metric_rows(
        metrics["metrics"], baseline["metrics"] if baseline else None, baseline["candidate"] if baseline else None
    )
    for warning in metrics.get("warnings", []):
        lines += ["", f"> warning: {warning}"]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["render"]
