"""MagiCoder-style code data: a ```python block and an "I have / Here is / I implemented" start ("Refer")."""

from . import Task

TASK = Task("magicoder", "code instructions (MagiCoder; bring your own data)", "refer", "alpaca", ("code",))
