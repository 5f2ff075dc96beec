"""The optional gRPC transport: etcd's v3 API over gRPC (needs ``grpcio`` and ``protobuf``).

``etcd.proto`` is etcdmap's own minimal schema of etcd's services; ``_regen`` compiles it
into ``_descriptor``, from which ``messages`` builds the message classes at import.
"""

import os

# gRPC's core logs every failed TLS handshake to stderr at INFO level; etcdmap
# reports those failures as errors, so only gRPC's own errors are shown.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# gRPC's default poller on Linux (epoll1) keeps one epoll set for the process, which a
# forked child would share with its parent.  A child of a process that ran gRPC never
# calls gRPC (see _transport.forked), but "poll" keeps even its inherited state per
# completion queue.  It only takes effect when etcdmap is the first to load grpc.
os.environ.setdefault("GRPC_POLL_STRATEGY", "poll")
# gRPC's core stops and restarts its threads around a fork when no other thread is
# inside gRPC at that instant, and skips that otherwise: a child's fate would depend
# on timing (it could crash inside fork()).  Off, a fork never runs gRPC code, and a
# child of a process that ran gRPC never calls it (see _transport.forked).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
