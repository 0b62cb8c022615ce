"""The model card (``README.md``) of a retrained model, replacing the card TRL or PEFT writes on save.

It says what a reader needs to trust or reproduce the model: the base model and dataset, the loss with its
citation and lineage (the candidate file's ``NAME``/``DESCRIPTION``/``ORIGIN``/``PARENTS``), the
hyper-parameters as trained (the resolved recipe), how training ran, which protections it ran under, and
the evaluation results, side by side with the baseline's where one was retrained.

Every string a candidate controls (its name, ``DESCRIPTION``, ``ORIGIN``, ``PARENTS``, and the messages that
quote them) is written as inert text: as a code span (:func:`code_span`), or escaped (:func:`escape_text`:
HTML's ``< > &`` as entities, Markdown's punctuation backslash-escaped, line starts that would open a heading,
list, quote or fence neutralised), so a hostile ``DESCRIPTION`` cannot add HTML, images, links, headings or
code blocks to a card that model hubs render. Code goes in a fence longer than any backtick run inside it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_EXPLAINED = {
    "pref_accuracy": "held-out preference accuracy (implicit-reward margin > 0; ties count half)",
    "margin": "mean held-out margin (pc - rc) - (pr - rr), nats",
    "chosen_logratio": "mean log pi/ref of the chosen answers",
    "rejected_logratio": "mean log pi/ref of the rejected answers",
    "judge_score": "mean 1-10 grade of a judge LLM (MT-Bench style)",
}


_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]{}#!|~^])")  # Markdown punctuation that formats, links or embeds
# A line start that would open a list ("- ", "1. ") or be a thematic break / setext underline ("---", "===").
_LINE_START = re.compile(r"^(\d*)([-+=.)])(?=\s|$|[-=]+$)")


def escape_text(text: object) -> str:
    """``text`` as literal Markdown: each line escaped (see the module docstring), lines kept."""
    lines = []
    for line in str(text).splitlines() or [""]:
        line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        line = _INLINE_SPECIAL.sub(r"\\\1", line)
        line = line.strip()  # four leading spaces would open an indented code block
        lines.append(_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), line))
    return "\n".join(lines)


def escape_line(text: object) -> str:
    """``escape_text`` on one line: line breaks become spaces (for list items and table cells)."""
    return " ".join(part for part in escape_text(text).splitlines() if part)


def code_span(text: object) -> str:
    """``text`` as an inline code span on one line, delimited by more backticks than it holds in a row."""
    flat = " ".join(str(text).split())
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{ticks}{pad}{flat}{pad}{ticks}"


def fenced(text: str, info: str = "") -> list[str]:
    """A fenced code block holding ``text`` verbatim: its fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, text.rstrip("\n"), fence]


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
        rows += [f"| {code_span(k)} | {v:.4f} |" for k, v in sorted(metrics.items())]
    else:
        rows = [f"| metric | this model | {escape_line(baseline_name)} (baseline) | difference |", "|---|---|---|---|"]
        for key in sorted(set(metrics) | set(baseline)):
            mine, theirs = metrics.get(key), baseline.get(key)
            diff = f"{mine - theirs:+.4f}" if mine is not None and theirs is not None else "-"
            show = [f"{v:.4f}" if v is not None else "-" for v in (mine, theirs)]
            rows.append(f"| {code_span(key)} | {show[0]} | {show[1]} | {diff} |")
    notes = [f"- `{k}`: {_EXPLAINED[k]}" for k in sorted(set(metrics) & set(_EXPLAINED))]
    return [*rows, "", *notes]


def _loss_section(metrics: dict[str, Any], loss_meta: dict[str, Any], source: str | None) -> list[str]:
    parents = loss_meta.get("PARENTS") or []
    parents = [parents] if isinstance(parents, str) else parents
    description = loss_meta.get("DESCRIPTION") or "-"
    lines = [
        "## The loss",
        "",
        f"- name: {code_span(loss_meta.get('NAME') or metrics['candidate'])}",
        f"- origin (citation or proposer): {escape_line(loss_meta.get('ORIGIN') or '-')}",
        f"- parents (lineage): {', '.join(code_span(p) for p in parents) if parents else 'none'}",
        "- code: [`loss.py`](loss.py)",
        "",
        "Description (the candidate's own words):",
        "",
        *[f"> {line}" for line in escape_text(description).splitlines()],
        "",
    ]
    if source is not None:
        lines += [*fenced(source, "python"), ""]
    return lines


def _protections_section(protections: dict[str, Any]) -> list[str]:
    if not protections:
        return []
    lines = ["## Protections", "", "The candidate ran outside the sandbox (distributed training); it ran under:", ""]
    for name, value in protections.items():
        if isinstance(value, dict):
            shown = ", ".join(f"{code_span(k)} {escape_line(v)}" for k, v in value.items())
        else:
            shown = f"{value:g} s" if isinstance(value, float) else escape_line(value)
        lines.append(f"- {name.removesuffix('_s').replace('_', ' ')}: {shown}")
    return [*lines, ""]


def render(
    metrics: dict[str, Any],
    *,
    loss_meta: dict[str, Any],
    recipe: dict[str, Any],
    baseline: dict[str, Any] | None,
    source: str | None = None,
) -> str:
    """The card's Markdown. ``metrics`` is ``metrics.json``'s content; ``baseline`` the baseline's, or None;
    ``source`` the loss's code, shown in the card when given."""
    lora = recipe.get("lora") is not None
    training = metrics.get("training", {})
    candidate, model, dataset = (code_span(metrics[key]) for key in ("candidate", "model", "dataset"))
    shown_recipe = {k: v for k, v in recipe.items() if k not in ("recipe", "notes")}
    lines = [
        _front_matter(metrics, lora),
        f"# {candidate} on {model}",
        "",
        (
            f"{'A LoRA adapter' if lora else 'A fully fine-tuned model'} trained from {model} on {dataset} with "
            f"the preference-optimization loss {candidate} through TRL's `DPOTrainer` (the loss replaces DPO's), "
            "by `lossforge retrain`."
        ),
        "",
        *_loss_section(metrics, loss_meta, source),
        "## Training",
        "",
        f"Recipe {code_span(recipe.get('recipe'))}; the resolved fields are in [`recipe.yaml`](recipe.yaml).",
        "",
        *fenced(yaml.safe_dump(shown_recipe, sort_keys=True), "yaml"),
        "",
    ]
    for key in ("distributed", "optimizer", "precision", "gradient_checkpointing", "global_steps", "train_seconds"):
        if key in training:
            value = training[key]
            shown = f"{value:.1f}" if isinstance(value, float) else escape_line(value)
            lines.append(f"- {key.replace('_', ' ')}: {shown}")
    lines += [f"- {escape_line(note)}" for note in recipe.get("notes", [])]
    lines += ["", *_protections_section(metrics.get("protections") or {})]
    lines += ["## Evaluation", "", escape_text(metrics.get("held_out", "")), ""]
    lines += _metric_rows(
        metrics["metrics"], baseline["metrics"] if baseline else None, baseline["candidate"] if baseline else None
    )
    for warning in metrics.get("warnings", []):
        lines += ["", f"> warning: {escape_line(warning)}"]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["code_span", "escape_line", "escape_text", "fenced", "render"]
