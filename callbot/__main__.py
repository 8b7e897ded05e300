"""`python -m callbot` is the `callbot` command."""

from .cli import main

main()
