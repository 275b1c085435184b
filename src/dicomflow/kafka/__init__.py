"""Thin typed wrappers around the confluent-kafka clients."""
