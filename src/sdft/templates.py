"""Prompt templates of the method, byte for byte as in method.md, and their rendering.

A template is three strings: the system text, the user turn (with ``{instruction}``, ``{input}`` and
``{reference}`` fields) and an optional assistant pre-fill that the model continues. Fields are filled in one
pass with a regex, never with ``str.format``: a literal ``{answer}`` in the math eval prompt survives, and text
inside a row (e.g. an instruction containing ``{reference}``) is never re-scanned.

Rendering (``render``):
- ``chat``: the model's own chat template, system text as the system turn, user turn, generation prompt,
  then the pre-fill appended as the beginning of the assistant turn.
- ``raw``: plain text. Layout ``standard`` joins ``system + "\\n\\n" + user + prefill``; layout ``release``
  reproduces the authors' bytes (Alpaca: no separator after the system text; math: the Llama-2 chat string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
USING_SYSTEM = (
    "Below are an instruction that describes a task along with a reference answer. "
    "Using the reference answer as a guide, write your own response."
)
REFER_SYSTEM = (
    "Below are an instruction that describes a task along with a reference answer. "
    "Refer to the reference answer and write your own response."
)
MATH_TRAIN_SYSTEM = (
    "You are an expert in math. Below is a math question. "
    "Write a response that appropriately answers the question."
)
MATH_EVAL_SYSTEM = (
    MATH_TRAIN_SYSTEM
    + " Your final answer should be an integer at the end of your response, formatted as: The answer is {answer}."
)
MATH_DISTILL_SYSTEM = (
    "You are an expert in math. Below are a math question and its reference answer. "
    "Refer to the reference answer and write a response that appropriately answers the question."
)
MATH_PREFILL = "Great! Let's think step by step. "

ALPACA_USER = "### Instruction:\n{instruction}\n\n### Response:\n"
DISTILL_USER = "### Instruction:\n{instruction}\n\n### Reference Answer:\n{reference}\n\n### Response:\n"

FIELDS = ("instruction", "input", "reference")
_FIELD_RE = re.compile(r"\{(instruction|input|reference)\}")

LAYOUTS = ("standard", "release")
PROMPT_FORMATS = ("raw", "chat")


class TemplateError(ValueError):
    """A template (or a user template file) is unusable."""


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    user: str
    prefill: str = ""
    release_style: str = "alpaca"  # how the authors' release laid the raw bytes: "alpaca" or "llama2"

    def fill_user(self, instruction: str, input: str = "", reference: str = "") -> str:
        """The user turn with the row's fields. Without an ``{input}`` field a non-empty input is joined
        to the instruction with a newline (as LLaMA-Factory joins prompt and query)."""
        if "{input}" not in self.user and input:
            instruction = f"{instruction}\n{input}"
        values = {"instruction": instruction, "input": input, "reference": reference}
        return _FIELD_RE.sub(lambda m: values[m.group(1)], self.user)


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("alpaca", ALPACA_SYSTEM, ALPACA_USER),
        # the request alone: in chat format the model's own default system prompt stays (how users meet it)
        Template("plain", "", "{instruction}"),
        Template("using", USING_SYSTEM, DISTILL_USER),
        Template("refer", REFER_SYSTEM, DISTILL_USER),
        Template("math-train", MATH_TRAIN_SYSTEM, "{instruction}", release_style="llama2"),
        Template("math-eval", MATH_EVAL_SYSTEM, "{instruction}", release_style="llama2"),
        Template(
            "math-distill", MATH_DISTILL_SYSTEM, "{instruction}\n\n{reference}", MATH_PREFILL, release_style="llama2"
        ),
    )
}


def load_template_file(path: str | Path) -> Template:
    """A user template: YAML or JSON with ``system``, ``user`` and optional ``prefill``.

    The user turn must contain ``{instruction}``; a distillation template also needs ``{reference}``.
    """
    import yaml

    p = Path(path)
    try:
        spec = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"{p}: template file not found") from None
    except yaml.YAMLError as e:
        raise TemplateError(f"{p}: not valid YAML/JSON: {e}") from None
    if not isinstance(spec, dict):
        raise TemplateError(f"{p}: expected a mapping with keys system, user, prefill")
    unknown = set(spec) - {"system", "user", "prefill", "name"}
    if unknown:
        raise TemplateError(f"{p}: unknown key(s) {sorted(unknown)}; allowed: name, system, user, prefill")
    for key in ("system", "user"):
        if not isinstance(spec.get(key), str):
            raise TemplateError(f"{p}: field '{key}' must be a string")
    if "{instruction}" not in spec["user"]:
        raise TemplateError(f"{p}: field 'user' must contain {{instruction}}")
    prefill = spec.get("prefill", "") or ""
    if not isinstance(prefill, str):
        raise TemplateError(f"{p}: field 'prefill' must be a string")
    return Template(str(spec.get("name", p.stem)), spec["system"], spec["user"], prefill)


def get_template(name_or_path: str) -> Template:
    if name_or_path in TEMPLATES:
        return TEMPLATES[name_or_path]
    if Path(name_or_path).suffix in {".yaml", ".yml", ".json"} or Path(name_or_path).exists():
        return load_template_file(name_or_path)
    raise TemplateError(f"unknown template '{name_or_path}'; built-in: {', '.join(TEMPLATES)}; or a .yaml file")


@dataclass(frozen=True)
class Turn:
    """One earlier exchange of a conversation (context only)."""

    user: str
    assistant: str


def _raw_text(template: Template, user: str, history: Sequence[Turn], layout: str, bos: str) -> str:
    if layout == "release" and template.release_style == "llama2":
        # the authors' Llama-2 chat rendering of the math templates
        text = f"{bos}<<SYS>>\n{template.system}\n<</SYS>>\n\n"
        for turn in history:
            text += f"[INST] {turn.user} [/INST] {turn.assistant} "
        text += f"[INST] {user} [/INST]"
        return text + (f" {template.prefill}" if template.prefill else "")
    sep = "" if layout == "release" or not template.system else "\n\n"
    text = bos + template.system + sep
    for turn in history:
        text += turn.user + turn.assistant + "\n\n"
    return text + user + template.prefill


def render(
    template: Template,
    instruction: str,
    input: str = "",
    reference: str = "",
    *,
    history: Sequence[Turn] = (),
    prompt_format: str = "chat",
    layout: str = "standard",
    tokenizer: Any = None,
    history_template: Template | None = None,
) -> str:
    """The full prompt text every backend continues (pre-fill included).

    ``history`` turns are rendered with ``history_template`` (default: the plain Alpaca user turn for Alpaca
    layouts, the bare instruction for chat) so that only the final turn carries the reference answer.
    """
    if prompt_format not in PROMPT_FORMATS:
        raise TemplateError(f"unknown prompt format '{prompt_format}'; use one of {PROMPT_FORMATS}")
    if layout not in LAYOUTS:
        raise TemplateError(f"unknown layout '{layout}'; use one of {LAYOUTS}")
    user = template.fill_user(instruction, input, reference)
    if prompt_format == "raw":
        hist_t = history_template or TEMPLATES["alpaca"]
        if template.release_style == "llama2":
            hist = list(history)
        else:
            hist = [Turn(hist_t.fill_user(t.user), t.assistant) for t in history]
        bos = bos_prefix(tokenizer)
        return _raw_text(template, user, hist, layout, bos)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise TemplateError("prompt format 'chat' needs a tokenizer with a chat template; use --prompt-format raw")
    messages: list[dict[str, str]] = []
    if template.system:
        messages.append({"role": "system", "content": template.system})
    for t in history:
        messages += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.assistant}]
    messages.append({"role": "user", "content": user})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + template.prefill


def bos_prefix(tokenizer: Any) -> str:
    """The BOS text a tokenizer would add by itself, so that prompts are tokenized without special tokens and
    every backend sees exactly the same tokens."""
    if tokenizer is None or not getattr(tokenizer, "bos_token", None):
        return ""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token if ids and ids[0] == tokenizer.bos_token_id else ""


def default_prompt_format(tokenizer: Any) -> str:
    return "chat" if tokenizer is not None and getattr(tokenizer, "chat_template", None) else "raw"


def resolve_prompt_format(tokenizer: Any, prompt_format: str) -> str:
    """``auto``: chat when the tokenizer has a chat template, else raw; any other value as it is."""
    return default_prompt_format(tokenizer) if prompt_format == "auto" else prompt_format
