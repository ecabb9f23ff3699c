"""Gorilla OpenFunctions: the normalised gold call must occur in the rewrite (the authors used "Refer")."""

from . import Task

TASK = Task("openfunctions", "function calling (Gorilla OpenFunctions v1)", "refer", "alpaca", ("openfunctions",))
