"""``python -m dicomflow``: the command line."""

from dicomflow.cli import main

main()
