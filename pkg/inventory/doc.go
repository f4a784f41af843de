// Package inventory lists the TCP sockets of every network namespace of the
// host, with the settings and counters that decide whether connect() can
// still find an ephemeral port there.
//
// # What iter/tcp sees
//
// A BPF program of type iter/tcp (Linux 5.9+) is called once per socket of
// the kernel's TCP hash tables: listening sockets, then the established
// hash, which also holds connecting and closing sockets, timewait sockets
// and request sockets. Request sockets (NEW_SYN_RECV, a half-open
// connection owned by its listener, with no port of its own) are left out.
// A socket that is only bound, neither listening nor connected, is in no
// table the iterator walks and is not seen. One fixed-size record per socket
// reaches userspace through the iterator's file descriptor.
//
// # Namespaces
//
// The iterator, like sock_diag, walks only the network namespace of the
// thread that opens it. Scan therefore runs on a goroutine locked to its OS
// thread, setns()es that thread into the namespace, opens the iterator, reads
// the namespace's sysctls (/proc/sys/net) and TcpExt counters
// (/proc/thread-self/net/netstat) — both resolve to the calling thread's
// namespace — and setns()es back before unlocking the thread. If it cannot
// return, the thread is never unlocked and dies with its goroutine, so no
// other goroutine ever runs in a foreign namespace. Our own namespace is
// scanned without setns.
//
// Namespaces finds namespaces through processes (/proc/PID/ns/net), threads
// whose namespace differs from their process's (/proc/PID/task/TID/ns/net,
// listed only for multi-threaded processes) and nsfs bind mounts of our
// mount namespace (/run/netns/NAME as made by "ip netns add", and others
// such as container runtimes'). A namespace kept alive only by an open file
// descriptor or by sockets is not found.
//
// A namespace can disappear between Namespaces and Scan (its last process
// exits, its bind mount is removed), or its /proc path can come to name
// another namespace (the PID was reused). Scan then fails with an error
// matching ErrNamespaceGone, and ScanAll reports it and goes on with the
// other namespaces.
//
// # Bound ports
//
// A socket is Bound when its port's bind bucket was made or joined by
// bind() or listen(): the kernel marks such a bucket with fastreuse or
// fastreuseport >= 0, while connect() makes buckets with both at -1.
// connect() shares a port with other connect()ed sockets (toward other
// destinations) but skips every port whose bucket is marked bound
// (__inet_hash_connect): a bound port is unavailable to connect() toward
// every destination, not only toward the bound socket's peer. Accepted
// sockets share their listener's bucket and are Bound too. The rule is per
// port: every socket on a bound port reports Bound. Since 6.18 the kernel
// returns a bucket to -1 once its last bind()ed owner goes; before, a
// bucket stayed bound until every socket on the port was gone.
//
// # Timers
//
// A timewait socket ends when its timer fires: TIME_WAIT lasts 60 s, an
// orphaned FIN_WAIT2 waits tcp_fin_timeout for the peer's FIN. The program
// reports the timer's distance in jiffies; Go converts it with the
// kernel's HZ, read once by Open from the kernel's build configuration
// (/boot/config-$(uname -r), else /proc/config.gz), where BPF loaders find
// CONFIG_HZ. When neither exists, RemainingKnown is false. (cilium/ebpf
// refuses an "extern ... __kconfig __weak" and fails the whole load when the
// option cannot be resolved, so the conversion cannot be done in BPF with a
// fallback.)
//
// Counters.TW counts timewait sockets as they are created; it can rise by
// more than the table ever holds. An RST ends a TIME_WAIT at once unless
// tcp_rfc1337=1, and on a busy host a server's retransmitted FIN can draw
// one from its own listener ("TIME-WAIT assassination"): seen here for 1 to
// 5 of 5000 loopback connections.
package inventory
