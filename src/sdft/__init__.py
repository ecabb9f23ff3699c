"""sdft: Self-Distillation Fine-Tuning (Yang et al., ACL 2024) — distill, train, evaluate, compare, report."""

__version__ = "0.1.0"
