"""The operator's dead-letter tools: list, show and re-drive what the consumer could not process.

``dicomflow dlq list | show | redrive`` (the CLI) call these. The letters are
read from every dead-letter topic dicomflow knows (:func:`dlq_topics`), from
the beginning, without joining a consumer group; a re-drive publishes the
original key and bytes back to the source topic, at most once per letter
(:mod:`.redrive` says how).
"""

from dicomflow.dlq.exceptions import DlqError, LetterNotFoundError
from dicomflow.dlq.inventory import Inventory, LetterFilter, dlq_topics, load_letters, parse_since, pretty_payload, show
from dicomflow.dlq.redrive import LedgerEntry, RedriveOutcome, RedriveReport, ledger_entries, redrive

__all__ = [
    "DlqError",
    "Inventory",
    "LedgerEntry",
    "LetterFilter",
    "LetterNotFoundError",
    "RedriveOutcome",
    "RedriveReport",
    "dlq_topics",
    "ledger_entries",
    "load_letters",
    "parse_since",
    "pretty_payload",
    "redrive",
    "show",
]
