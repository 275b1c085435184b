"""Query/retrieve over DIMSE, answered from the index (PostgreSQL) and the storage layer.

C-MOVE and C-GET: :mod:`.retrieve_keys` (the identifier's unique keys),
:mod:`.retrieve` (index lookup, reads, transcoding, audit), :mod:`.move` and
:mod:`.get` (pynetdicom's EVT_C_MOVE / EVT_C_GET handlers), :mod:`.contexts`
(what the acceptor offers). docs/qr.md says how to run them.
"""
