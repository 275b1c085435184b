"""``python -m dicomflow.cli``: the command line (the way components start each other)."""

from dicomflow.cli import main

main()
