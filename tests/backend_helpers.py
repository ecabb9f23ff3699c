"""Test backends that return fixed completions (no model): shared by the distillation tests."""

from __future__ import annotations

from sdft.generation import Completion


class Scripted:
    """Returns ``replies`` (``(text, finish_reason)`` pairs) in turn, cycling, and records every prompt sent."""

    name = "scripted"

    def __init__(self, replies):
        self.replies, self.prompts = replies, []

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            self.prompts.append(p)
            text, finish = self.replies[(len(self.prompts) - 1) % len(self.replies)]
            out.append(Completion(text, finish, 10, 5))
        return out

    def close(self):
        pass
