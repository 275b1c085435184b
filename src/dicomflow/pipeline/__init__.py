"""The consumer pipeline: storage_queue → parse → PostgreSQL + derived events → commit.

- :mod:`.batch`: batching by count and time, in arrival order;
- :mod:`.parse`: store-event decoding and header extraction on a process pool,
  with the storage-root check;
- :mod:`.dlq`: dead-letter records and their audit events;
- :mod:`.commit`: the ordered persist → publish + ack → commit step;
- :mod:`.loop`: the consumer loop (retries, pause/resume, rebalances, stop);
- :mod:`.service`: the loop wired to the real store, producer and metrics;
- ``dicomflow consume`` itself is :mod:`dicomflow.cli.consume`.
"""
