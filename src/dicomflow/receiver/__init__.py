"""Ingest over the DICOM network: the C-STORE SCP (what every way in shares is in :mod:`dicomflow.ingest`).

Modules, in the order an instance meets them:

- :mod:`~dicomflow.receiver.scp`: one receiver process (engine, store service, audit);
- :mod:`~dicomflow.receiver.acceptor`: the native network engine (default), over
  :mod:`~dicomflow.receiver.upperlayer` (PDUs) and :mod:`~dicomflow.receiver.dimse`
  (command sets);
- :mod:`~dicomflow.receiver.pynetdicom_server`: the pynetdicom network engine;
- :mod:`~dicomflow.receiver.service`: the C-STORE decision: validate, write (through
  :class:`dicomflow.ingest.ingestor.Ingestor`), publish, answer;
- :mod:`~dicomflow.receiver.exceptions`: the errors only the network receiver raises;
- :mod:`~dicomflow.receiver.workers`: several receiver processes behind one port.

This package imports nothing heavy on purpose (the CLI imports it for
``--help``); import :mod:`dicomflow.receiver.scp` for the server.
"""
