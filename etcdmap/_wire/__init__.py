"""The wire: etcd's v3 JSON gateway as pure functions, no I/O.

Requests are built by :mod:`etcdmap.ops` (public); here are the rest:
:mod:`.replies` turns JSON replies into :mod:`etcdmap.records`,
:mod:`.stream` splits a watch stream into messages, and :mod:`.keys` is the
key codec.
"""
