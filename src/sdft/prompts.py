"""The training prompt, built in one place: every stage that conditions on what fine-tuning trains on uses it.

:func:`training_prompt` renders a row (``instruction``, ``input``, ``history``) with the run's train template,
prompt format and layout, exactly as ``sdft train`` tokenizes it (:func:`sdft.training.common.tokenize`), ``sdft
gap`` scores targets under it, and the distillation frames ``train`` and ``self`` sample from it:

- frame ``release`` (the authors'): the distillation template's own prompt (its system text as the system turn);
- frame ``train``: the training prompt whose user turn is the instruction, then ``"\\n\\nReference answer:\\n"`` +
  the reference, then ``"\\n\\n"`` + the distillation template's guidance sentence (:func:`guidance`) -- so the
  rewrite differs from what the model would answer at training time only by having seen the reference (in chat
  format the model's own chat template and default system prompt stay as they are at training time);
- frame ``self``: the training prompt itself, no reference shown (the seed model's own answer).

>>> from sdft.templates import TEMPLATES
>>> row = {"instruction": "Name a colour.", "input": ""}
>>> training_prompt(row, TEMPLATES["plain"], prompt_format="raw")
'Name a colour.'
>>> framed_prompt("train", row, "Red.", TEMPLATES["plain"], TEMPLATES["using"], prompt_format="raw")
'Name a colour.\\n\\nReference answer:\\nRed.\\n\\nUsing the reference answer as a guide, write your own response.'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from sdft.templates import Template, Turn, render

FRAMES = ("release", "train", "self")
REFERENCE_HEADER = "\n\nReference answer:\n"
# the distillation templates' instruction to the model, as their system text words it
GUIDANCE = {
    "using": "Using the reference answer as a guide, write your own response.",
    "refer": "Refer to the reference answer and write your own response.",
    "math-distill": "Refer to the reference answer and write a response that appropriately answers the question.",
}


def guidance(template: Template) -> str:
    """The guidance sentence of a distillation template: the built-in wording, else the last sentence of its system
    text (a user template's own instruction).

    >>> guidance(Template("mine", "Below is a task. Rewrite the reference in your words.", "{instruction}"))
    'Rewrite the reference in your words.'
    """
    if template.name in GUIDANCE:
        return GUIDANCE[template.name]
    text = template.system.strip()
    cut = text.rstrip(".").rfind(". ")
    return text[cut + 2:] if cut >= 0 else text


def history_of(row: Mapping[str, Any]) -> tuple[Turn, ...]:
    """A row's earlier turns (``history``: ``[[user, assistant], ...]``, or :class:`Turn` objects)."""
    return tuple(t if isinstance(t, Turn) else Turn(t[0], t[1]) for t in row.get("history") or ())


def training_prompt(row: Mapping[str, Any], template: Template, *, prompt_format: str, layout: str = "standard",
                    tokenizer: Any = None, instruction: str | None = None, input: str | None = None) -> str:
    """The prompt ``sdft train`` puts before a row's target (``instruction``/``input`` replace the row's)."""
    return render(template, row["instruction"] if instruction is None else instruction,
                  row.get("input", "") if input is None else input, history=history_of(row),
                  prompt_format=prompt_format, layout=layout, tokenizer=tokenizer)


def framed_prompt(frame: str, row: Mapping[str, Any], reference: str, train_template: Template,
                  distill_template: Template, *, prompt_format: str, layout: str = "standard",
                  tokenizer: Any = None) -> str:
    """The prompt a distillation ``frame`` samples the rewrite of ``row`` from (see the module doc)."""
    if frame == "release":
        return render(distill_template, row["instruction"], row.get("input", ""), reference,
                      history=history_of(row), prompt_format=prompt_format, layout=layout, tokenizer=tokenizer)
    kw = dict(prompt_format=prompt_format, layout=layout, tokenizer=tokenizer)
    if frame == "self":
        return training_prompt(row, train_template, **kw)
    if frame != "train":
        raise ValueError(f"unknown distillation frame '{frame}'; use one of {', '.join(FRAMES)}")
    block = REFERENCE_HEADER + reference + "\n\n" + guidance(distill_template)
    instruction, input = row["instruction"], row.get("input", "")
    if "{input}" in train_template.user:  # the reference follows everything the request says
        return training_prompt(row, train_template, input=input + block, **kw)
    if input:  # joined as the template would join it, before the reference
        instruction, input = f"{instruction}\n{input}", ""
    return training_prompt(row, train_template, instruction=instruction + block, input=input, **kw)


def encode(prompt: str, target: str, tokenizer: Any, *, eos: bool = True,
           max_target_tokens: int | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids): tokenized separately, without special tokens (the prompt text already holds any
    BOS), so the prompt ids equal what generation sees; ``eos`` appends the tokenizer's eos to the target;
    ``max_target_tokens`` keeps the first K target tokens."""
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t_ids = tokenizer(target + (tokenizer.eos_token if eos else ""), add_special_tokens=False)["input_ids"]
    return p_ids, t_ids if max_target_tokens is None else t_ids[:max_target_tokens]


def recorded_train_template(data: str | Path) -> str | None:
    """The training template a `sdft distill` folder's rewrites were framed for (its ``train_template``), if any:
    training and gap default to it, so a train-frame distillation trains in the frame it was sampled in."""
    import json

    cfg = Path(data).expanduser() / "config.json"
    if not cfg.is_file():
        return None
    try:
        return (json.loads(cfg.read_text(encoding="utf-8")).get("config") or {}).get("train_template")
    except (OSError, ValueError, AttributeError):
        return None
