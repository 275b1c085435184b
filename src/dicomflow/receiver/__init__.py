"""Ingest over the DICOM network: the C-STORE SCP (what every way in shares is in :mod:`dicomflow.ingest`).

Modules, in the order an instance meets them:

- :mod:`~dicomflow.receiver.scp`: one receiver process (engine, store service, audit);
- :mod:`~dicomflow.receiver.acceptor`: the native network engine (default), over
  :mod:`~dicomflow.receiver.upperlayer` (PDUs) and :mod:`~dicomflow.receiver.dimse`
  (command sets);
- :mod:`~dicomflow.receiver.pynetdicom_server`: the pynetdicom network engine;
- :mod:`~dicomflow.receiver.tcp`: the accepted connection's TCP options, for both engines
  (prompt acknowledgements whatever the sender's Nagle);
- :mod:`~dicomflow.receiver.events`: what an engine reports about associations;
- :mod:`~dicomflow.receiver.reception`: one C-STORE data set received as a stream; the
  store decision it hands over to (validate, write, publish, answer) is
  :class:`dicomflow.ingest.service.StoreService`, shared with STOW-RS;
- :mod:`~dicomflow.receiver.workers`: several receiver processes behind one port.

This package imports nothing heavy on purpose (the CLI imports it for
``--help``); import :mod:`dicomflow.receiver.scp` for the server.
"""
