"""Query/retrieve over DIMSE, answered from the index (PostgreSQL) and the storage layer (docs/qr.md).

C-FIND:

- :mod:`~dicomflow.qr.model`: the information models, levels and the attributes the index answers;
- :mod:`~dicomflow.qr.identifier`: an identifier read into a query (PS3.4 C.2.2 matching);
- :mod:`~dicomflow.qr.sql`: that query as SQL on the index;
- :mod:`~dicomflow.qr.results`: result rows as response identifiers;
- :mod:`~dicomflow.qr.service`: :class:`FindService`, what a network engine calls.

C-MOVE and C-GET: :mod:`.retrieve_keys` (the identifier's unique keys),
:mod:`.retrieve` (index lookup, reads, transcoding, audit), :mod:`.move` and
:mod:`.get` (pynetdicom's EVT_C_MOVE / EVT_C_GET handlers), :mod:`.contexts`
(what the acceptor offers).

Engine-agnostic where it can be: the receiver's engines (:mod:`dicomflow.receiver`)
carry the DIMSE messages and decide the caller's tenant.
"""
