"""The optional gRPC transport: etcd's v3 API over gRPC (needs ``grpcio`` and ``protobuf``).

``etcd.proto`` is etcdmap's own minimal schema of etcd's services; ``_regen`` compiles it
into ``_descriptor``, from which ``messages`` builds the message classes at import.
"""

import os

# gRPC's core logs every failed TLS handshake to stderr at INFO level; etcdmap
# reports those failures as errors, so only gRPC's own errors are shown.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
