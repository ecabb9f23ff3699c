"""Prompts byte for byte as in method.md (and the authors' release)."""

import pytest

from sdft.templates import TEMPLATES, TemplateError, get_template, load_template_file, render, Turn

ALPACA_SYS = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
USING_SYS = ("Below are an instruction that describes a task along with a reference answer. "
             "Using the reference answer as a guide, write your own response.")
REFER_SYS = ("Below are an instruction that describes a task along with a reference answer. "
             "Refer to the reference answer and write your own response.")
MATH_TRAIN = ("You are an expert in math. Below is a math question. "
              "Write a response that appropriately answers the question.")
MATH_EVAL = MATH_TRAIN + (" Your final answer should be an integer at the end of your response, formatted as: "
                          "The answer is {answer}.")
MATH_DISTILL = ("You are an expert in math. Below are a math question and its reference answer. Refer to the "
                "reference answer and write a response that appropriately answers the question.")


def test_system_texts_match_method_md():
    assert TEMPLATES["alpaca"].system == ALPACA_SYS
    assert TEMPLATES["using"].system == USING_SYS
    assert TEMPLATES["refer"].system == REFER_SYS
    assert TEMPLATES["math-train"].system == MATH_TRAIN
    assert TEMPLATES["math-eval"].system == MATH_EVAL
    assert TEMPLATES["math-distill"].system == MATH_DISTILL
    assert TEMPLATES["math-distill"].prefill == "Great! Let's think step by step. "


def test_alpaca_raw_standard_and_release_layouts():
    t = TEMPLATES["alpaca"]
    std = render(t, "Say hi", "to Bob", prompt_format="raw")
    assert std == ALPACA_SYS + "\n\n### Instruction:\nSay hi\nto Bob\n\n### Response:\n"
    rel = render(t, "Say hi", prompt_format="raw", layout="release")
    assert rel == ALPACA_SYS + "### Instruction:\nSay hi\n\n### Response:\n"  # the release has no separator


def test_distill_using_and_refer_user_turn():
    for name, system in (("using", USING_SYS), ("refer", REFER_SYS)):
        text = render(TEMPLATES[name], "Q?", "", "REF", prompt_format="raw")
        assert text == system + "\n\n### Instruction:\nQ?\n\n### Reference Answer:\nREF\n\n### Response:\n"


def test_math_release_layout_is_the_llama2_string():
    text = render(TEMPLATES["math-distill"], "How many?", "", "It is 3.\nThe answer is 3.", prompt_format="raw",
                  layout="release")
    assert text == (f"<<SYS>>\n{MATH_DISTILL}\n<</SYS>>\n\n[INST] How many?\n\nIt is 3.\nThe answer is 3. [/INST] "
                    "Great! Let's think step by step. ")
    ev = render(TEMPLATES["math-eval"], "How many?", prompt_format="raw", layout="release")
    assert ev == f"<<SYS>>\n{MATH_EVAL}\n<</SYS>>\n\n[INST] How many? [/INST]"


def test_literal_answer_placeholder_survives(tokenizer):
    text = render(TEMPLATES["math-eval"], "What is 2+2?", tokenizer=tokenizer, prompt_format="chat")
    assert "formatted as: The answer is {answer}." in text


def test_fields_are_filled_once_not_rescanned():
    text = render(TEMPLATES["using"], "use {reference} and {input} literally", "", "R", prompt_format="raw")
    assert "use {reference} and {input} literally" in text
    assert text.count("R\n\n### Response:") == 1


def test_chat_format_puts_system_in_system_turn_and_prefill_last(tokenizer):
    text = render(TEMPLATES["math-distill"], "Q", "", "A", prompt_format="chat", tokenizer=tokenizer)
    assert text == (f"<|im_start|>system\n{MATH_DISTILL}<|im_end|>\n<|im_start|>user\nQ\n\nA<|im_end|>\n"
                    "<|im_start|>assistant\nGreat! Let's think step by step. ")


def test_history_is_context_only(tokenizer):
    hist = (Turn("first q", "first a"),)
    raw = render(TEMPLATES["using"], "second q", "", "second a", history=hist, prompt_format="raw")
    assert raw.index("### Instruction:\nfirst q\n\n### Response:\nfirst a") < raw.index("second q")
    assert raw.count("### Reference Answer:") == 1
    chat = render(TEMPLATES["using"], "second q", "", "second a", history=hist, tokenizer=tokenizer)
    assert "<|im_start|>assistant\nfirst a<|im_end|>" in chat


def test_chat_needs_a_chat_template():
    with pytest.raises(TemplateError, match="chat template"):
        render(TEMPLATES["alpaca"], "x", prompt_format="chat", tokenizer=None)


def test_user_template_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text('system: S\nuser: "Q: {instruction}\\nA ref: {reference}\\nInput: {input}\\n"\nprefill: "Sure: "\n')
    t = load_template_file(f)
    assert render(t, "q", "i", "r", prompt_format="raw") == "S\n\nQ: q\nA ref: r\nInput: i\nSure: "
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: S\nuser: no field\n")
    with pytest.raises(TemplateError, match="instruction"):
        load_template_file(bad)
    unk = tmp_path / "unk.yaml"
    unk.write_text("system: S\nuser: '{instruction}'\nsytem: typo\n")
    with pytest.raises(TemplateError, match="sytem"):
        get_template(str(unk))
