"""The optional gRPC transport: etcd's v3 API over gRPC (needs ``grpcio`` and ``protobuf``).

``etcd.proto`` is etcdmap's own minimal schema of etcd's services; ``_regen`` compiles it
into ``_descriptor``, from which ``messages`` builds the message classes at import.
"""

import os

# gRPC's core logs every failed TLS handshake to stderr at INFO level; etcdmap
# reports those failures as errors, so only gRPC's own errors are shown.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# gRPC's default poller on Linux (epoll1) keeps process-wide state: one epoll set
# and a list of the threads waiting on it.  A forked child inherits that list with
# the parent's threads in it, which do not exist there, and gRPC's core aborts when
# it hands them work (``ev_epoll1_linux.cc ... state == KICKED``).  The "poll"
# poller keeps its state per completion queue, which a child never shares, and
# costs nothing measurable for a client's few connections.  It only takes effect
# when etcdmap is the first to load grpc in the process (docs/transports.rst).
os.environ.setdefault("GRPC_POLL_STRATEGY", "poll")
