"""Query/retrieve over DIMSE on the index: C-FIND (docs/qr.md).

- :mod:`~dicomflow.qr.model`: the information models, levels and the attributes the index answers;
- :mod:`~dicomflow.qr.identifier`: an identifier read into a query (PS3.4 C.2.2 matching);
- :mod:`~dicomflow.qr.sql`: that query as SQL on the index;
- :mod:`~dicomflow.qr.results`: result rows as response identifiers;
- :mod:`~dicomflow.qr.service`: :class:`FindService`, what a network engine calls.

Engine-agnostic: the receiver's engines (:mod:`dicomflow.receiver`) carry the
DIMSE messages and decide the caller's tenant.
"""
