"""General instruction data (Alpaca, Dolly, LIMA, your own): "Using" template, banned-phrase filter only."""

from . import Task

TASK = Task("alpaca", "general instructions (Alpaca, Dolly, LIMA, user data)", "using", "alpaca")
