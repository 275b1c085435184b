"""The consumer pipeline: storage_queue → parse → PostgreSQL + derived events → commit.

- :mod:`.batch`: batching by count and time, in arrival order;
- :mod:`.parse`: store-event decoding and header extraction on a process pool,
  with the storage-root check;
- :mod:`.types`: what parsing yields (a parsed item, or a poison one with
  its dead letter and audit event);
- :mod:`.commit`: the ordered persist → publish + ack → commit step;
- :mod:`.loop`: the consumer loop (rebalances, stop; retries through the
  consumer toolkit, :mod:`dicomflow.kafka.retry`);
- :mod:`.service`: the loop wired to the real store, producer and metrics;
- ``dicomflow consume`` itself is :mod:`dicomflow.cli.consume`.
"""
