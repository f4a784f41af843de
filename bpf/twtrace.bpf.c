// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * twtrace: attribute every TIME_WAIT entry and every ephemeral-port failure
 * of connect()/bind() to the process responsible.
 *
 * Only three event kinds leave the kernel (timewait, connect_error,
 * bind_error); every other state transition just updates per-socket
 * bookkeeping. See DESIGN.md §1-§3 for the kernel facts behind each hook.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define EADDRINUSE 98
#define EADDRNOTAVAIL 99
#define EEXIST 17
#define TASK_COMM_LEN 16

enum tcp_state {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT = 2,
	TCP_SYN_RECV = 3,
	TCP_FIN_WAIT1 = 4,
	TCP_FIN_WAIT2 = 5,
	TCP_TIME_WAIT = 6,
	TCP_CLOSE = 7,
	TCP_CLOSE_WAIT = 8,
	TCP_LAST_ACK = 9,
	TCP_LISTEN = 10,
	TCP_CLOSING = 11,
};

enum event_kind {
	EVENT_TIMEWAIT = 1,
	EVENT_CONNECT_ERROR = 2,
	EVENT_BIND_ERROR = 3,
	/* The precise tier only (fentry/fexit, where the kernel allows). */
	EVENT_TIMEWAIT_END = 4,  /* a timewait socket went away */
	EVENT_TW_OVERFLOW = 5,   /* closed with no timewait: tcp_max_tw_buckets */
	EVENT_TW_REUSE = 6,      /* connect() took over a timewait socket */
};

/* Why a timewait socket ended (EVENT_TIMEWAIT_END). */
enum end_reason {
	END_EXPIRED = 1,  /* its timer ran out */
	END_RST = 2,      /* an RST killed it (tcp_rfc1337=0) */
	END_SYN = 3,      /* a new SYN from the peer took it over */
	END_REUSED = 4,   /* a local connect() took it over (tcp_tw_reuse) */
	END_KILLED = 5,   /* anything else: its namespace went away, ... */
};

enum role {
	ROLE_UNKNOWN = 0,
	ROLE_CLIENT = 1,
	ROLE_SERVER = 2,
};

/* What userspace receives through the ring buffer. */
struct event {
	u64 ts_ns;      /* CLOCK_MONOTONIC of the event */
	u64 open_ns;    /* CLOCK_MONOTONIC of connect()/accept, 0 when unknown */
	u64 cgroup_id;
	u64 bytes_sent; /* payload, retransmissions not counted twice */
	u64 bytes_received;
	u32 pid;        /* tgid of the process responsible */
	u32 tid;
	u32 opener_pid;
	u32 netns;
	s32 err;        /* positive errno for connect_error/bind_error */
	u16 family;
	u16 sport;      /* host order */
	u16 dport;      /* host order */
	u8 kind;
	u8 role;
	u8 saddr[16];
	u8 daddr[16];
	char comm[TASK_COMM_LEN];
	char opener_comm[TASK_COMM_LEN];
	u32 flags;      /* EVENT_F_* */
	u8 reason;      /* timewait_end: enum end_reason */
	u8 substate;    /* TIME_WAIT, or FIN_WAIT2 for an orphan's short wait; 0 = not known */
};

/* A timewait entry whose move to CLOSE no program saw, reported when its
 * record was found later: the time is the close, the rest is exact. */
#define EVENT_F_RECOVERED 1
/* A timewait entry seen where the kernel made the timewait socket
 * (inet_twsk_alloc returned one): the precise tier. */
#define EVENT_F_CONFIRMED 2

/* Keeps struct event in BTF so bpf2go can generate its Go twin. */
const struct event *unused_event __attribute__((unused));

/* Connection attempts per process and destination, counted in the kernel
 * (no record leaves it) when count_connects is set: what `twtrace top`
 * shows as new connections per second. */
struct connect_key {
	u32 netns;
	u32 pid;
	char comm[TASK_COMM_LEN];
	u8 daddr[16];
	u16 dport;    /* host order */
	u16 family;
};
const struct connect_key *unused_connect_key __attribute__((unused));

/* Who opened a socket and who closed it first, carried forward to the
 * softirq where the socket finally leaves for a timewait socket. */
struct sock_owner {
	u64 open_ns;
	u64 closer_cgroup;
	u32 opener_pid;
	u32 closer_pid;
	u32 closer_tid;
	u8 role;
	u8 closed;  /* closer_* and the close-time fields are valid */
	u8 reset;   /* an RST arrived: the move to CLOSE is not a timewait */
	u8 reported; /* the precise tier reported what came of the close */
	char opener_comm[TASK_COMM_LEN];
	char closer_comm[TASK_COMM_LEN];
	/* At the first close, for recovering a missed end (see set_state).
	 * After close() no payload moves any more without ending in an RST,
	 * so the byte counts are final. */
	u64 close_ns;
	u64 bytes_sent;
	u64 bytes_received;
	u32 netns;
	u16 family;
	u16 sport;
	u16 dport;
	u16 pad2;
	u8 saddr[16];
	u8 daddr[16];
};

/* A listening socket's owner, found by accepted children through
 * (netns, local port): the child's birth runs in softirq. */
struct listen_key {
	u32 netns;
	u16 port;
	u16 pad;
};

struct listener {
	u32 pid;
	char comm[TASK_COMM_LEN];
};

/* A bind() in flight, per thread, between entry and exit. */
struct pending_call {
	u64 sk;
	u32 netns;
	u16 family;
	u16 port;   /* requested port (host order) */
	u8 kind;
	u8 pad[7];
	u8 addr[16];  /* requested address */
};

/* Global configuration, set by userspace before load. */
volatile const u32 events_mask = 0xffffffff;
/* Only report this network namespace (inode); 0 = every namespace. */
volatile const u32 target_netns = 0;
/* Wake the reader only once this many bytes wait in the ring buffer; below
 * it, userspace polls on a timer (DESIGN: a wake-up costs microseconds). */
volatile const u64 wakeup_bytes = 1 << 20;
/* Count connect() attempts per process and destination (map connects). */
volatile const u32 count_connects = 0;
/* Only processes in the followed set (and what they fork) make records:
 * `twtrace run` follows its command and every descendant. */
volatile const u32 follow = 0;

/* timewait/connect_error/bind_error records for userspace; size set by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* What could not be recorded, never lost silently: [LOST_RECORDS] records
 * that did not fit in the ring buffer, [LOST_OWNERS] sockets the owner
 * table had no room for, [LOST_CONNECTS] connection attempts the connects
 * table had no room to count; and [RECOVERED_ENDS] timewait entries
 * reported late, because no program saw their end (see recover()), and
 * [LOST_FOLLOW] processes forked by followed ones that the followed set
 * had no room for. */
#define LOST_RECORDS 0
#define LOST_OWNERS 1
#define RECOVERED_ENDS 2
#define LOST_CONNECTS 3
#define LOST_FOLLOW 4
/* [LOST_TW] timewait sockets the precise tier's table had no room for:
 * their end is not reported. */
#define LOST_TW 5
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 6);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

/* Socket pointer -> owner, from connect() (or the first close) to the move
 * to CLOSE, where the entry is deleted. Preallocated: an insert or delete
 * is a per-CPU freelist operation, about half the cost of an LRU hash or of
 * socket-local storage on the kernels we measured. Sized by the loader;
 * when it is full, the socket goes untracked and is counted (never
 * silently). No entry outlives its socket: every socket we record ends
 * with a move to CLOSE while we are attached (or the map goes with us). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, u64);
	__type(value, struct sock_owner);
} owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listen_key);
	__type(value, struct listener);
} listeners SEC(".maps");

/* connect_key -> attempts, per CPU: no atomic operation, no shared cache
 * line. Userspace sums the CPUs and deletes the keys of processes that
 * have exited (they cannot count any more). Sized by the loader.
 * Not preallocated: a new key is rare (one per process and destination)
 * while preallocating 16k entries times the CPUs took 12 ms of start-up
 * on 2 CPUs, and more with every CPU. Only tp_btf programs use it, which
 * every kernel lets allocate at run time. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct connect_key);
	__type(value, u64);
} connects SEC(".maps");

/* Followed processes (tgid -> 1), when follow is set: seeded by
 * userspace, grown by tw_fork at every fork of a followed process, so a
 * child is followed from its first instruction, however short it lives.
 * An entry outlives its process (its sockets close in exit_files(),
 * after the exit tracepoint); a fork that reuses the pid drops it, and
 * userspace sweeps the pids that are gone. Sized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u8);
} followed SEC(".maps");

/* Thread id -> its bind() in flight. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct pending_call);
} pending SEC(".maps");

/* Set by userspace once the precise tier's connect() hooks are attached
 * (a bit per family of socket): they then report every failed connect,
 * and the tracepoint stops reporting EADDRNOTAVAIL for that family. */
volatile u32 connect_exits = 0;
#define CONNECT_EXIT4 1
#define CONNECT_EXIT6 2

/* Thread id -> the source of its connect() that has just failed, from
 * the tracepoint to tcp_v4/v6_connect's return (precise tier only). */
struct connect_source {
	u64 sk;
	u8 saddr6[16];  /* an AF_INET6 socket's */
	__be32 saddr4;  /* and the IPv4 one (of a v4-mapped connect too) */
	u16 sport;
	u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, struct connect_source);
} connect_sources SEC(".maps");

/* Whether current's records count: always, unless following. */
static __always_inline bool current_followed(void)
{
	if (!follow)
		return true;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&followed, &tgid) != NULL;
}

static __always_inline bool wanted(u8 kind)
{
	return events_mask & (1u << kind);
}

static __always_inline bool netns_wanted(u32 netns)
{
	return target_netns == 0 || target_netns == netns;
}

static __always_inline void count_lost(u32 what)
{
	u64 *n = bpf_map_lookup_elem(&lost, &what);
	if (n)
		(*n)++;
}

/* Submit without waking the reader unless enough has piled up: the
 * reader polls every 100 ms, so latency stays bounded either way. */
static __always_inline void submit(void *rec)
{
	u64 flags = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(rec, flags);
}

/* PF_IO_WORKER (include/linux/sched.h): an io_uring io-wq worker, a
 * thread of the process that submitted the request (a kernel thread of
 * its own before 5.12), named "iou-wrk-<tid>". */
#define PF_IO_WORKER 0x00000010

/* current's comm; for an io-wq worker, its process's (the group leader's):
 * a connect io_uring handed to a worker is the process's own call, and
 * "iou-wrk-1234" would hide which program made it. The tid still names
 * the worker. */
static __always_inline void current_comm(char *dst)
{
	bpf_get_current_comm(dst, TASK_COMM_LEN);
	struct task_struct *task = (void *)bpf_get_current_task();
	if (BPF_CORE_READ(task, flags) & PF_IO_WORKER) {
		struct task_struct *leader = BPF_CORE_READ(task, group_leader);
		bpf_core_read_str(dst, TASK_COMM_LEN, &leader->comm);
	}
}

/* A zeroed record of kind about current (the process in its syscall),
 * or NULL (counted) when the ring buffer is full. */
static __always_inline struct event *current_event(u8 kind, u32 netns)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(LOST_RECORDS);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	u64 id = bpf_get_current_pid_tgid();
	e->kind = kind;
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = id >> 32;
	e->tid = (u32)id;
	e->netns = netns;
	current_comm(e->comm);
	return e;
}

/* In the tp_btf programs sk is a BTF-typed pointer: its fields are read
 * with plain loads (relocated by CO-RE) instead of bpf_probe_read_kernel
 * calls, a few nanoseconds each instead of tens. */
static __always_inline u32 sock_netns(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

/* The same from a pointer that is not BTF-typed (found in the fd table). */
static __always_inline u32 sock_netns_probed(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* The local port as the tracepoint reports it (inet_sport): skc_num is
 * zeroed by inet_put_port() before some moves to CLOSE. */
static __always_inline u16 local_port(const struct sock *sk)
{
	const struct inet_sock *inet = (const void *)bpf_skc_to_tcp_sock((void *)sk);
	return inet ? bpf_ntohs(inet->inet_sport) : 0;
}

/* Owner record of sk; with create, a zeroed one is made if absent. */
static __always_inline struct sock_owner *owner_of(const struct sock *sk, bool create)
{
	u64 key = (u64)sk;
	struct sock_owner *o = bpf_map_lookup_elem(&owners, &key);
	if (o || !create)
		return o;
	struct sock_owner fresh = {};
	if (bpf_map_update_elem(&owners, &key, &fresh, BPF_NOEXIST) == -EEXIST)
		return bpf_map_lookup_elem(&owners, &key);
	o = bpf_map_lookup_elem(&owners, &key);
	if (!o)
		count_lost(LOST_OWNERS);
	return o;
}

static __always_inline void owner_drop(const struct sock *sk)
{
	u64 key = (u64)sk;
	bpf_map_delete_elem(&owners, &key);
}

static __always_inline void read_addrs(const struct sock *sk, u16 family, u8 *saddr, u8 *daddr)
{
	__builtin_memset(saddr, 0, 16);
	__builtin_memset(daddr, 0, 16);
	if (family == AF_INET6) {
		__builtin_memcpy(saddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		__be32 s4 = sk->__sk_common.skc_rcv_saddr, d4 = sk->__sk_common.skc_daddr;
		__builtin_memcpy(saddr, &s4, 4);
		__builtin_memcpy(daddr, &d4, 4);
	}
}

/* One connection attempt toward the destination connect() has just set on
 * sk, by the opener recorded in o (or current, when the owner table had no
 * room: we run inside connect()). */
static __always_inline void count_connect(const struct sock *sk, const struct sock_owner *o)
{
	struct connect_key k;
	__builtin_memset(&k, 0, sizeof(k));
	u16 family = sk->__sk_common.skc_family;
	k.netns = sock_netns(sk);
	if (o) {
		k.pid = o->opener_pid;
		__builtin_memcpy(k.comm, o->opener_comm, sizeof(k.comm));
	} else {
		k.pid = bpf_get_current_pid_tgid() >> 32;
		current_comm(k.comm);
	}
	k.dport = bpf_ntohs(sk->__sk_common.skc_dport);
	k.family = family;
	if (family == AF_INET6) {
		__builtin_memcpy(k.daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		__be32 d4 = sk->__sk_common.skc_daddr;
		__builtin_memcpy(k.daddr, &d4, 4);
	}
	u64 *n = bpf_map_lookup_elem(&connects, &k);
	if (n) {
		(*n)++;
		return;
	}
	u64 one = 1;
	if (bpf_map_update_elem(&connects, &k, &one, BPF_NOEXIST) == 0)
		return;
	/* Another CPU made the key just now: count on ours. */
	n = bpf_map_lookup_elem(&connects, &k);
	if (n)
		(*n)++;
	else
		count_lost(LOST_CONNECTS);
}

/* SYN_SENT->CLOSE while the socket is still SS_UNCONNECTED happens only
 * inside a connect() that failed after setting SYN_SENT (DESIGN.md §3):
 * current is the caller, daddr/dport are still set, and a source port is
 * set only if the socket was bound before. (A connect refused by the peer
 * or closed while connecting has been SS_CONNECTING since connect()
 * returned.) The failure there is inet_hash_connect() finding no port
 * that gives a unique 4-tuple: EADDRNOTAVAIL. No syscall hook is needed,
 * and none is used: enabling any syscall tracepoint puts every syscall of
 * every task on the slow path (measured: -4 to -6 % at full churn). */
static __always_inline void failed_connect(const struct sock *sk)
{
	struct socket *so = sk->sk_socket;
	if (!so || so->state != SS_UNCONNECTED || !current_followed())
		return;
	if (connect_exits & (sk->__sk_common.skc_family == AF_INET6 ? CONNECT_EXIT6 : CONNECT_EXIT4)) {
		/* The precise tier reports it when connect() returns, with the
		 * errno; the source address is gone by then (reset on the
		 * failure path since 6.1): hand it over. */
		struct connect_source src = { .sk = (u64)sk, .sport = local_port(sk) };
		src.saddr4 = sk->__sk_common.skc_rcv_saddr;
		__builtin_memcpy(src.saddr6, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		u32 tid = (u32)bpf_get_current_pid_tgid();
		bpf_map_update_elem(&connect_sources, &tid, &src, BPF_ANY);
		return;
	}
	u32 netns = sock_netns(sk);
	if (!netns_wanted(netns))
		return;
	struct event *e = current_event(EVENT_CONNECT_ERROR, netns);
	if (!e)
		return;
	e->err = EADDRNOTAVAIL;
	u16 family = sk->__sk_common.skc_family;
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	e->sport = local_port(sk);
	read_addrs(sk, family, e->saddr, e->daddr);
	/* A v4-mapped connect() from an AF_INET6 socket fails inside
	 * tcp_v4_connect: the IPv4 fields hold the truth, report it as IPv4. */
	u8 *d = e->daddr;
	if (family == AF_INET6 && d[10] == 0xff && d[11] == 0xff &&
	    !(d[0] | d[1] | d[2] | d[3] | d[4] | d[5] | d[6] | d[7] | d[8] | d[9])) {
		family = AF_INET;
		read_addrs(sk, AF_INET, e->saddr, e->daddr);
	}
	e->family = family;
	submit(e);
}

/* The part of a timewait event that comes from the socket's record: who
 * opened the connection, who closed it first (and so owns the TIME_WAIT). */
static __always_inline void timewait_owner(struct event *e, const struct sock_owner *o)
{
	e->kind = EVENT_TIMEWAIT;
	e->err = 0;
	e->open_ns = o->open_ns;
	e->cgroup_id = o->closer_cgroup;
	e->pid = o->closer_pid;
	e->tid = o->closer_tid;
	e->opener_pid = o->opener_pid;
	e->role = o->role;
	__builtin_memcpy(e->comm, o->closer_comm, sizeof(e->comm));
	__builtin_memcpy(e->opener_comm, o->opener_comm, sizeof(e->opener_comm));
}

/* o is the record of an earlier socket at this address that a process
 * closed first, and whose move to CLOSE no program saw (every program on
 * the tracepoint was skipped by the kernel's recursion guard, which
 * happens, rarely, at saturation). Unless an RST ended it, it entered
 * timewait: report that now, from what was recorded at the close. */
static __always_inline void recover(const struct sock_owner *o)
{
	if (o->reset || o->reported || !wanted(EVENT_TIMEWAIT) || !netns_wanted(o->netns))
		return;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(LOST_RECORDS);
		return;
	}
	e->flags = EVENT_F_RECOVERED;
	e->reason = 0;
	e->substate = 0;
	e->ts_ns = o->close_ns;
	timewait_owner(e, o);
	e->netns = o->netns;
	e->family = o->family;
	e->sport = o->sport;
	e->dport = o->dport;
	__builtin_memcpy(e->saddr, o->saddr, 16);
	__builtin_memcpy(e->daddr, o->daddr, 16);
	e->bytes_sent = o->bytes_sent;
	e->bytes_received = o->bytes_received;
	count_lost(RECOVERED_ENDS);
	submit(e);
}

/* Payload bytes of sk, for its timewait record. bytes_sent counts every
 * data byte put on the wire, retransmissions included; all of it is acked
 * by now (so is our FIN). bytes_received counts the peer's FIN too once
 * tcp_fin() ran, which set SOCK_DONE (close() does not). */
static __always_inline void payload(const struct sock *sk, u64 *sent, u64 *received)
{
	const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	*sent = 0;
	*received = 0;
	if (!tp)
		return;
	*sent = tp->bytes_sent - tp->bytes_retrans;
	u64 r = tp->bytes_received;
	unsigned long flags;
	if (bpf_core_field_exists(sk->__sk_common.skc_flags)) {
		flags = sk->__sk_common.skc_flags;
	} else {
		const struct sock___old *old = (const void *)sk;
		flags = old->sk_flags;
	}
	if (r && (flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))))
		r--;
	*received = r;
}

/* The record of sk leaving for timewait (or, kind EVENT_TW_OVERFLOW,
 * closing with none), owned by whoever closed it first (o). It runs in
 * softirq or timer context: the identity comes from o, not current. */
static __always_inline void timewait_event(const struct sock *sk, const struct sock_owner *o,
					   u32 netns, u8 kind, u32 flags, u8 substate)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(LOST_RECORDS);
		return;
	}
	e->flags = flags;
	e->reason = 0;
	e->substate = substate;
	e->ts_ns = bpf_ktime_get_ns();
	timewait_owner(e, o);
	e->kind = kind;
	e->netns = netns;
	e->family = sk->__sk_common.skc_family;
	/* inet_sport, not skc_num: inet_put_port() has already zeroed the
	 * latter before the move to CLOSE (DESIGN.md §2). */
	e->sport = local_port(sk);
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	read_addrs(sk, e->family, e->saddr, e->daddr);
	payload(sk, &e->bytes_sent, &e->bytes_received);
	submit(e);
}

/* -------------------------------------------------------------------- */
/* sock:inet_sock_set_state — the TCP state diagram, one case per edge.  */
/* Most edges cost a compare or two; map work happens on four of them.   */
/* -------------------------------------------------------------------- */

static __always_inline int set_state(const struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* With a namespace filter, other namespaces cost nothing more. */
	if (target_netns && sock_netns(sk) != target_netns)
		return 0;

	/* CLOSE->SYN_SENT runs inside connect(): current is the opener.
	 * The source port is not chosen yet; we only need who and when. */
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		if (!current_followed())
			return 0;
		struct sock_owner *o = owner_of(sk, true);
		if (!o) {
			if (count_connects)
				count_connect(sk, NULL);
			return 0;
		}
		/* A record marked closed belongs to an earlier socket at this
		 * address whose move to CLOSE no program saw (every program on
		 * the tracepoint was skipped by the kernel's recursion guard,
		 * which happens, rarely, at saturation): its timewait entry, if
		 * it had one, is missing. Count it, never silently. */
		if (o->closed)
			recover(o);
		o->open_ns = bpf_ktime_get_ns();
		o->opener_pid = bpf_get_current_pid_tgid() >> 32;
		o->role = ROLE_CLIENT;
		o->closed = 0;
		o->reset = 0;
		o->reported = 0;
		current_comm(o->opener_comm);
		if (count_connects)
			count_connect(sk, o);
		return 0;
	}

	/* CLOSE->LISTEN runs inside listen(): remember the server process so
	 * the sockets it accepts can name it. */
	if (newstate == TCP_LISTEN) {
		struct listen_key k = { .netns = sock_netns(sk), .port = local_port(sk) };
		struct listener l = { .pid = bpf_get_current_pid_tgid() >> 32 };
		current_comm(l.comm);
		bpf_map_update_elem(&listeners, &k, &l, BPF_ANY);
		return 0;
	}
	/* LISTEN->CLOSE: the listener is gone. (LISTEN->SYN_RECV, a child
	 * cloned from it in softirq, gets no record: most accepted sockets
	 * never close first, and a record per socket would double the cost
	 * of a connection. The one that closes first is found below.) */
	if (oldstate == TCP_LISTEN) {
		if (newstate == TCP_CLOSE) {
			struct listen_key k = { .netns = sock_netns(sk), .port = local_port(sk) };
			bpf_map_delete_elem(&listeners, &k);
		}
		return 0;
	}

	/* ESTABLISHED->FIN_WAIT1 (or SYN_RECV->FIN_WAIT1) runs in close(),
	 * shutdown() or the exit of the last holder: current closed first
	 * and will own the TIME_WAIT. Accepted sockets, and sockets opened
	 * before we attached, get their record here: the closer is known. */
	if (newstate == TCP_FIN_WAIT1) {
		/* FIN_WAIT1->FIN_WAIT1: close() after shutdown(), before the FIN
		 * was acked. The first one closed first; nothing changes. */
		if (oldstate == TCP_FIN_WAIT1)
			return 0;
		/* When following, a process outside the set closing first
		 * matters only for a socket a followed process opened. */
		struct sock_owner *o = owner_of(sk, current_followed());
		if (!o)
			return 0;
		if (o->closed) {
			/* Either this very transition, handled a second time (a
			 * safety net: the pending table keeps the twin from
			 * handling what its primary did), or a record left by an earlier socket at this address (see
			 * above). The connection and the time tell them apart: a
			 * 4-tuple is reused only after its timewait socket is at
			 * least a second old (tcp_tw_reuse), a repeat comes within
			 * microseconds. */
			if (o->sport == local_port(sk) &&
			    o->dport == bpf_ntohs(sk->__sk_common.skc_dport) &&
			    o->family == sk->__sk_common.skc_family &&
			    bpf_ktime_get_ns() - o->close_ns < 1000000)
				return 0;
			recover(o);
			__builtin_memset(o, 0, sizeof(*o));
		}
		if (o->role == ROLE_UNKNOWN) {
			/* No connect() seen: accepted, if its local port is one
			 * a process listens on in this namespace (connect()
			 * never picks a port held by listen() or bind()). */
			struct listen_key k = { .netns = sock_netns(sk), .port = local_port(sk) };
			struct listener *l = bpf_map_lookup_elem(&listeners, &k);
			if (l) {
				o->role = ROLE_SERVER;
				o->opener_pid = l->pid;
				__builtin_memcpy(o->opener_comm, l->comm, sizeof(o->opener_comm));
			}
		}
		u64 id = bpf_get_current_pid_tgid();
		o->closer_pid = id >> 32;
		o->closer_tid = (u32)id;
		o->closer_cgroup = bpf_get_current_cgroup_id();
		current_comm(o->closer_comm);
		o->close_ns = bpf_ktime_get_ns();
		o->netns = sock_netns(sk);
		o->family = sk->__sk_common.skc_family;
		o->sport = local_port(sk);
		o->dport = bpf_ntohs(sk->__sk_common.skc_dport);
		read_addrs(sk, o->family, o->saddr, o->daddr);
		const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
		if (tp) {
			o->bytes_sent = tp->bytes_sent - tp->bytes_retrans;
			o->bytes_received = tp->bytes_received;
		}
		o->closed = 1;
		return 0;
	}

	if (newstate != TCP_CLOSE)
		return 0;

	if (oldstate == TCP_SYN_SENT && wanted(EVENT_CONNECT_ERROR))
		failed_connect(sk);

	/* Every other move to CLOSE ends our interest in the socket. Only
	 * FIN_WAIT2->CLOSE and CLOSING->CLOSE hand the 4-tuple to a timewait
	 * socket (tcp_time_wait() then tcp_done()); they run in softirq or
	 * timer context, so the identity comes from the record, not current. */
	struct sock_owner *o = owner_of(sk, false);
	if (!o)
		return 0;
	/* Only FIN_WAIT1/2 and CLOSING follow a close that came first. Any
	 * other socket finding a record marked closed found the record of
	 * an earlier socket at this address whose end was missed (above). */
	if (o->closed && oldstate != TCP_FIN_WAIT1 && oldstate != TCP_FIN_WAIT2 &&
	    oldstate != TCP_CLOSING)
		recover(o);
	/* In the precise tier the entry (or the overflow) was reported where
	 * the kernel made the timewait socket, a moment ago. */
	bool timewait = (oldstate == TCP_FIN_WAIT2 || oldstate == TCP_CLOSING) &&
			o->closed && !o->reset && !o->reported;
	u32 netns = timewait ? sock_netns(sk) : 0;
	if (timewait && wanted(EVENT_TIMEWAIT) && netns_wanted(netns))
		timewait_event(sk, o, netns, EVENT_TIMEWAIT, 0, 0);
	owner_drop(sk);
	return 0;
}

/* The BTF-typed tracepoints: arguments straight from the call site, no
 * trace record built, and a recursion guard per program and CPU.
 *
 * That guard skips a run that starts while the same program is running on
 * the CPU, which happens here: a softirq (loopback, or any NIC) interrupts
 * the program running for a process-context transition and changes the
 * state of another socket. A skipped run can be a lost timewait entry, so
 * each hook has two programs, attached in this order:
 *   - the primary marks its CPU busy, handles the transition, notes it as
 *     handled and awaiting its twin (a per-CPU table of pending entries),
 *     and clears busy;
 *   - the twin, run right after, handles the transition only if the
 *     primary did not: the CPU is marked busy (the primary is running
 *     underneath, interrupted, so the kernel skipped it for this one), or
 *     the transition is not pending (the primary was interrupted in the
 *     few instructions around its own code). If it is pending, the twin
 *     takes it off the table.
 * Each transition is handled once; the twin costs a few loads and compares
 * when there is nothing to do. Userspace compares the kernel's count of
 * skipped primary runs with the twin's count of rescues, so a transition
 * neither handled is still reported.
 *
 * Which entry is whose: the address of ctx. The kernel calls each program
 * of a tracepoint from the same frame, with the arguments copied to the
 * same place on the stack, so a primary and its twin see the same ctx,
 * while a transition nested in a softirq (another stack, or deeper on
 * this one) sees another. The twin looks only at the entry of its own
 * invocation, and a primary replaces the entry at its address, if any.
 *
 * Why: a softirq in the gap between a primary and its twin handles its
 * own transitions there, and each of those is taken off the table by its
 * own twin. But a softirq that interrupts a twin runs primaries whose
 * twins the kernel skips (the twin is the program already running), and
 * their entries stay behind. Two earlier designs lost the entry a twin
 * was about to look for, and it handled its transition a second time (a
 * connect() counted twice):
 *   - a ring of the last four handled: four transitions of a softirq in
 *     the gap pushed it out (6 runs in 40 of the 8,000-connection churn
 *     test);
 *   - a table keyed by socket and edge whose oldest entry made room:
 *     left-behind entries piled up until every new entry evicted one,
 *     and a softirq with enough transitions inside a twin evicted the
 *     live one (once in CI with 8 slots; with 2 slots, 3 runs in 80).
 * Keyed by address, what is left behind takes one slot per call site
 * (replaced at each new transition there), not one per skipped twin: in
 * the same churn test, with a table of 8, no entry was ever evicted.
 */

#define PENDING 8

struct guard {
	u64 busy;
	u64 seq;
	u64 pend_ctx[PENDING];  /* the invocation (its ctx address); 0: free */
	u64 pend_sk[PENDING];   /* the socket of the transition it handled */
	u64 pend_seq[PENDING];  /* when (seq), to find the oldest */
	u32 pend_edge[PENDING]; /* and its (oldstate, newstate) */
	u64 rescued;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, struct guard);
} guards SEC(".maps");

#define GUARD_STATE 0
#define GUARD_RESET 1

static __always_inline struct guard *guard_of(u32 slot)
{
	return bpf_map_lookup_elem(&guards, &slot);
}

/* Note a handled transition as pending for the twin of the same
 * invocation: its slot if it has one (left behind by an earlier
 * invocation at that address whose twin was skipped), else a free slot,
 * else the oldest. */
static __always_inline void pend(struct guard *g, u64 ctx, u64 sk, u32 edge)
{
	u32 slot = PENDING, free = PENDING, old = 0;
	u64 oldest = ~0ULL;
	for (u32 i = 0; i < PENDING; i++) {
		u64 c = g->pend_ctx[i];
		if (c == ctx) {
			slot = i;
			break;
		}
		if (c == 0)
			free = i;
		else if (g->pend_seq[i] < oldest) {
			oldest = g->pend_seq[i];
			old = i;
		}
	}
	if (slot == PENDING)
		slot = free < PENDING ? free : old;
	slot &= PENDING - 1;
	g->pend_ctx[slot] = ctx;
	g->pend_sk[slot] = sk;
	g->pend_edge[slot] = edge;
	g->pend_seq[slot] = ++g->seq;
}

/* The twin's question: did the primary of this invocation handle this
 * transition? If so, take it off the table. */
static __always_inline bool unpend(struct guard *g, u64 ctx, u64 sk, u32 edge)
{
	for (u32 i = 0; i < PENDING; i++) {
		if (g->pend_ctx[i] != ctx)
			continue;
		if (g->pend_sk[i] != sk || g->pend_edge[i] != edge)
			return false;
		g->pend_ctx[i] = 0;
		return true;
	}
	return false;
}

#define PRIMARY(slot, sk, edge, call)                                \
	({                                                           \
		struct guard *g = guard_of(slot);                    \
		if (g)                                               \
			g->busy = 1;                                 \
		call;                                                \
		if (g) {                                             \
			pend(g, (u64)ctx, (u64)(sk), (edge));        \
			g->busy = 0;                                 \
		}                                                    \
		0;                                                   \
	})

#define NESTED(slot, sk, edge, call)                                             \
	({                                                                       \
		struct guard *g = guard_of(slot);                                \
		if (g && (g->busy || !unpend(g, (u64)ctx, (u64)(sk), (edge)))) { \
			call;                                                    \
			g->rescued++;                                            \
		}                                                                \
		0;                                                               \
	})

#define EDGE(o, n) ((u32)(o) << 8 | (u32)(n))

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tw_state, const struct sock *sk, int oldstate, int newstate)
{
	return PRIMARY(GUARD_STATE, sk, EDGE(oldstate, newstate),
		       set_state(sk, oldstate, newstate));
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tw_state_nest, const struct sock *sk, int oldstate, int newstate)
{
	return NESTED(GUARD_STATE, sk, EDGE(oldstate, newstate),
		      set_state(sk, oldstate, newstate));
}

/* An RST in FIN_WAIT2 also moves the socket to CLOSE, with no timewait
 * socket behind it: mark it so the move is not reported. */
static __always_inline void receive_reset(const struct sock *sk)
{
	struct sock_owner *o = owner_of(sk, false);
	if (o)
		o->reset = 1;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tw_reset, struct sock *sk)
{
	return PRIMARY(GUARD_RESET, sk, 0, receive_reset(sk));
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tw_reset_nest, struct sock *sk)
{
	return NESTED(GUARD_RESET, sk, 0, receive_reset(sk));
}

/* -------------------------------------------------------------------- */
/* bind(0) changes no TCP state: its failure is only seen at the syscall. */
/* These hooks are attached only when bind_error is asked for: enabling  */
/* a syscall tracepoint slows every syscall on the host (see above).     */
/* -------------------------------------------------------------------- */

struct sockaddr_in_user {
	u16 family;
	__be16 port;
	__be32 addr;
};

struct sockaddr_in6_user {
	u16 family;
	__be16 port;
	__be32 flowinfo;
	u8 addr[16];
};

/* fd of the current task -> its TCP struct sock, or NULL. */
static __always_inline const struct sock *tcp_sock_of_fd(long fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return NULL;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	/* private_data of a non-socket file is something else entirely:
	 * require a plausible inet family before trusting the rest. */
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP ||
	    BPF_CORE_READ(sk, sk_type) != SOCK_STREAM)
		return NULL;
	return sk;
}

SEC("tracepoint/syscalls/sys_enter_bind")
int tw_enter_bind(struct trace_event_raw_sys_enter *ctx)
{
	if (!wanted(EVENT_BIND_ERROR) || !current_followed())
		return 0;
	const void *uaddr = (const void *)ctx->args[1];
	long len = (long)ctx->args[2];
	struct pending_call p = {};
	p.kind = EVENT_BIND_ERROR;
	/* The sockaddr first: bind() to a fixed port does not draw from the
	 * ephemeral range, and is answered without walking the fd table. */
	if (bpf_probe_read_user(&p.family, sizeof(p.family), uaddr))
		return 0;
	if (p.family == AF_INET && len >= (long)sizeof(struct sockaddr_in_user)) {
		struct sockaddr_in_user sin;
		if (bpf_probe_read_user(&sin, sizeof(sin), uaddr))
			return 0;
		p.port = bpf_ntohs(sin.port);
		__builtin_memcpy(p.addr, &sin.addr, 4);
	} else if (p.family == AF_INET6 && len >= (long)sizeof(struct sockaddr_in6_user)) {
		struct sockaddr_in6_user sin6;
		if (bpf_probe_read_user(&sin6, sizeof(sin6), uaddr))
			return 0;
		p.port = bpf_ntohs(sin6.port);
		__builtin_memcpy(p.addr, sin6.addr, 16);
	} else {
		return 0;
	}
	if (p.port != 0)
		return 0;
	const struct sock *sk = tcp_sock_of_fd((long)ctx->args[0]);
	if (!sk)
		return 0;
	p.sk = (u64)sk;
	p.netns = sock_netns_probed(sk);
	if (!netns_wanted(p.netns))
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&pending, &tid, &p, BPF_ANY);
	return 0;
}

/* The syscall's verdict for this thread's pending call of `kind`. */
static __always_inline int exit_call(long ret, u8 kind, long want)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct pending_call *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	if (p->kind != kind || ret != -want)
		goto out;

	struct event *e = current_event(kind, p->netns);
	if (!e)
		goto out;
	e->err = want;
	e->family = p->family;
	__builtin_memcpy(e->saddr, p->addr, 16);
	submit(e);
out:
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_bind")
int tw_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	return exit_call(ctx->ret, EVENT_BIND_ERROR, EADDRINUSE);
}

/* A fork of a followed process: the child is followed before it runs.
 * (A new thread has its parent's tgid: nothing to do.) Attached only when
 * following. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(tw_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 ptgid = parent->tgid, ctgid = child->tgid;
	if (ptgid == ctgid)
		return 0;
	if (bpf_map_lookup_elem(&followed, &ptgid)) {
		u8 one = 1;
		if (bpf_map_update_elem(&followed, &ctgid, &one, BPF_ANY))
			count_lost(LOST_FOLLOW);
	} else {
		/* The pid of a followed process that is gone, reused. */
		bpf_map_delete_elem(&followed, &ctgid);
	}
	return 0;
}

/* -------------------------------------------------------------------- */
/* The precise tier: fentry/fexit on the functions that make, reuse and  */
/* end timewait sockets, and on connect(). Loaded and attached only      */
/* where the kernel allows it (userspace tries, and falls back to the    */
/* tracepoints alone when it cannot); DESIGN.md §6.                      */
/* -------------------------------------------------------------------- */

/* A live timewait socket of a traced connection: who owns it, from when. */
struct tw_info {
	u64 start_ns;   /* made by inet_twsk_alloc */
	u64 cgroup_id;
	u32 pid;        /* closed first: owns the timewait */
	u32 tid;
	u32 opener_pid;
	u32 netns;
	u16 family;
	u16 sport;
	u16 dport;
	u8 role;
	u8 why;         /* END_REUSED once tcp_twsk_unique gave it away */
	u8 seg_flags;   /* TCP flags of the last segment it received */
	u8 pad[7];
	u8 saddr[16];
	u8 daddr[16];
	char comm[TASK_COMM_LEN];
	char opener_comm[TASK_COMM_LEN];
};

/* Timewait socket pointer -> its owner, from inet_twsk_alloc to its end.
 * Not preallocated: a host holds far fewer timewait sockets than the
 * table allows (tcp_max_tw_buckets, per namespace), and an empty table
 * costs nothing where the precise tier is refused. Sized by the loader;
 * sockets with no room are counted (LOST_TW). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, u64);
	__type(value, struct tw_info);
} tw_socks SEC(".maps");

#define TCPHDR_FLAGS_OFF 13
#define TCPHDR_RST 0x04
#define TCPHDR_SYN 0x02

static __always_inline void event_from_tw(struct event *e, const struct tw_info *ti)
{
	e->cgroup_id = ti->cgroup_id;
	e->pid = ti->pid;
	e->tid = ti->tid;
	e->opener_pid = ti->opener_pid;
	e->netns = ti->netns;
	e->family = ti->family;
	e->sport = ti->sport;
	e->dport = ti->dport;
	e->role = ti->role;
	__builtin_memcpy(e->saddr, ti->saddr, 16);
	__builtin_memcpy(e->daddr, ti->daddr, 16);
	__builtin_memcpy(e->comm, ti->comm, sizeof(e->comm));
	__builtin_memcpy(e->opener_comm, ti->opener_comm, sizeof(e->opener_comm));
}

/* tcp_time_wait(sk, state, timeo) asks inet_twsk_alloc(sk, dr, state) for
 * the timewait socket (state: TIME_WAIT, or FIN_WAIT2 for an orphan's
 * short wait). NULL means none: tcp_max_tw_buckets is reached (the kernel
 * counts TCPTimeWaitOverflow) and the socket closes with no TIME_WAIT
 * protecting its 4-tuple. Both are reported here, where the kernel
 * decides, and marked so the move to CLOSE that follows adds nothing.
 * (One hook: tcp_time_wait's state reaches this function unchanged.) */
SEC("fexit/inet_twsk_alloc")
int BPF_PROG(tw_alloc, const struct sock *sk, void *dr, int state, struct inet_timewait_sock *tw)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	struct sock_owner *o = owner_of(sk, false);
	if (!o || !o->closed || o->reset || o->reported)
		return 0;
	o->reported = 1;
	u32 netns = sock_netns(sk);
	if (!netns_wanted(netns))
		return 0;
	if (!tw) {
		if (wanted(EVENT_TW_OVERFLOW))
			timewait_event(sk, o, netns, EVENT_TW_OVERFLOW, 0, (u8)state);
		return 0;
	}
	if (wanted(EVENT_TIMEWAIT))
		timewait_event(sk, o, netns, EVENT_TIMEWAIT, EVENT_F_CONFIRMED, (u8)state);
	if (!wanted(EVENT_TIMEWAIT_END) && !wanted(EVENT_TW_REUSE))
		return 0;

	struct tw_info ti;
	__builtin_memset(&ti, 0, sizeof(ti));
	ti.start_ns = bpf_ktime_get_ns();
	ti.cgroup_id = o->closer_cgroup;
	ti.pid = o->closer_pid;
	ti.tid = o->closer_tid;
	ti.opener_pid = o->opener_pid;
	ti.role = o->role;
	__builtin_memcpy(ti.comm, o->closer_comm, sizeof(ti.comm));
	__builtin_memcpy(ti.opener_comm, o->opener_comm, sizeof(ti.opener_comm));
	ti.netns = netns;
	ti.family = sk->__sk_common.skc_family;
	ti.sport = local_port(sk);
	ti.dport = bpf_ntohs(sk->__sk_common.skc_dport);
	read_addrs(sk, ti.family, ti.saddr, ti.daddr);
	u64 key = (u64)tw;
	if (bpf_map_update_elem(&tw_socks, &key, &ti, BPF_ANY))
		count_lost(LOST_TW);
	return 0;
}

/* A timewait socket of ours is going away: report its real lifetime. */
static __always_inline void tw_end(u64 key, u8 reason, u8 substate)
{
	struct tw_info *ti = bpf_map_lookup_elem(&tw_socks, &key);
	if (!ti)
		return; /* made before we attached, or not one of ours */
	/* The entry may be here for timewait_reuse alone: then the end is
	 * only forgotten, not reported. */
	if (!wanted(EVENT_TIMEWAIT_END))
		goto out;
	if (reason == END_KILLED) {
		if (ti->why == END_REUSED)
			reason = END_REUSED;
		else if (ti->seg_flags & TCPHDR_RST)
			reason = END_RST;
		else if (ti->seg_flags & TCPHDR_SYN)
			reason = END_SYN;
	}
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(LOST_RECORDS);
		goto out;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = EVENT_TIMEWAIT_END;
	e->ts_ns = bpf_ktime_get_ns();
	e->open_ns = ti->start_ns; /* lifetime: of the timewait socket */
	e->reason = reason;
	e->substate = substate;
	e->flags = EVENT_F_CONFIRMED;
	event_from_tw(e, ti);
	submit(e);
out:
	/* The timer and an early kill can race for the same socket: the
	 * first to delete the entry reports the end. */
	bpf_map_delete_elem(&tw_socks, &key);
}

/* The timer of a timewait socket ran out. It is embedded in the socket:
 * the socket is the timer's address less the field's offset. */
SEC("fentry/tw_timer_handler")
int BPF_PROG(tw_expire, struct timer_list *t)
{
	u64 key = (u64)t - bpf_core_field_offset(struct inet_timewait_sock, tw_timer);
	if (!bpf_map_lookup_elem(&tw_socks, &key))
		return 0;
	const struct inet_timewait_sock *tw = (const void *)key;
	tw_end(key, END_EXPIRED, BPF_CORE_READ(tw, tw_substate));
	return 0;
}

/* Killed before its time: an RST (tcp_rfc1337=0), a SYN that opens a new
 * connection, a connect() reusing it, its namespace going away. */
SEC("fentry/inet_twsk_deschedule_put")
int BPF_PROG(tw_kill, struct inet_timewait_sock *tw)
{
	tw_end((u64)tw, END_KILLED, tw->tw_substate);
	return 0;
}

/* Every segment a timewait socket receives: remember its flags, to tell
 * an RST from a SYN when the socket is then killed. */
SEC("fentry/tcp_timewait_state_process")
int BPF_PROG(tw_segment, struct inet_timewait_sock *tw, void *skb, const void *th)
{
	u64 key = (u64)tw;
	struct tw_info *ti = bpf_map_lookup_elem(&tw_socks, &key);
	if (!ti)
		return 0;
	u8 fl = 0;
	bpf_probe_read_kernel(&fl, sizeof(fl), th + TCPHDR_FLAGS_OFF);
	ti->seg_flags = fl;
	return 0;
}

/* connect() found the 4-tuple held by a timewait socket and may take it
 * over (tcp_tw_reuse, or a socket bound to the port): 1 means it does.
 * current is the connecting process. */
SEC("fexit/tcp_twsk_unique")
int BPF_PROG(tw_reuse, struct sock *sk, struct sock *sktw, void *twp, int ret)
{
	if (ret != 1 || !current_followed())
		return 0;
	u64 key = (u64)sktw;
	struct tw_info *ti = bpf_map_lookup_elem(&tw_socks, &key);
	if (ti)
		ti->why = END_REUSED;
	if (!wanted(EVENT_TW_REUSE))
		return 0;
	u32 netns = sock_netns(sk);
	if (!netns_wanted(netns))
		return 0;
	struct event *e = current_event(EVENT_TW_REUSE, netns);
	if (!e)
		return 0;
	/* The 4-tuple is the timewait socket's: the new socket has none yet. */
	u16 family = sktw->__sk_common.skc_family;
	e->family = family;
	e->sport = sktw->__sk_common.skc_num;
	e->dport = bpf_ntohs(sktw->__sk_common.skc_dport);
	read_addrs(sktw, family, e->saddr, e->daddr);
	e->substate = BPF_CORE_READ((const struct inet_timewait_sock *)sktw, tw_substate);
	if (ti) {
		/* Opener: the process whose timewait socket this was. */
		e->opener_pid = ti->pid;
		__builtin_memcpy(e->opener_comm, ti->comm, sizeof(e->opener_comm));
		e->open_ns = ti->start_ns; /* lifetime: the timewait socket's age */
		e->role = ti->role;
		e->flags = EVENT_F_CONFIRMED;
	}
	submit(e);
	return 0;
}

struct sockaddr_any {
	u16 family;
	__be16 port;
	union {
		__be32 addr4;
		struct {
			__be32 flowinfo;
			u8 addr6[16];
		};
	};
};

/* connect() failed in tcp_v4_connect/tcp_v6_connect, whichever path led
 * there (the syscall, io_uring, a kernel user): report it with its errno.
 * The destination comes from the address connect() was given. */
static __always_inline void connect_failed(const struct sock *sk, const void *uaddr, int len, int ret)
{
	if (!wanted(EVENT_CONNECT_ERROR) || !current_followed())
		return;
	u32 netns = sock_netns(sk);
	if (!netns_wanted(netns))
		return;
	struct sockaddr_any sa;
	__builtin_memset(&sa, 0, sizeof(sa));
	/* connect() copied the address into a sockaddr_storage: reading the
	 * whole of ours is safe whatever the length. A short address is what
	 * made it fail (EINVAL): no destination then. */
	if (bpf_probe_read_kernel(&sa, sizeof(sa), uaddr) ||
	    (sa.family == AF_INET && len < 8) || (sa.family == AF_INET6 && len < (int)sizeof(sa)) ||
	    len < (int)sizeof(u16))
		sa.family = 0;
	struct event *e = current_event(EVENT_CONNECT_ERROR, netns);
	if (!e)
		return;
	e->err = -ret;
	e->flags = EVENT_F_CONFIRMED;

	/* The source: as the tracepoint saw it after the port was chosen, if
	 * it did (the failure path resets it since 6.1), else as it is. */
	struct connect_source here = { .sk = (u64)sk, .sport = local_port(sk) };
	here.saddr4 = sk->__sk_common.skc_rcv_saddr;
	__builtin_memcpy(here.saddr6, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
	u32 tid = e->tid;
	struct connect_source *src = bpf_map_lookup_elem(&connect_sources, &tid);
	if (src) {
		if (src->sk == (u64)sk)
			here = *src;
		bpf_map_delete_elem(&connect_sources, &tid);
	}
	e->sport = here.sport;
	e->dport = bpf_ntohs(sa.port);
	u16 family = sk->__sk_common.skc_family;
	u8 *d = sa.addr6;
	bool mapped = sa.family == AF_INET6 && d[10] == 0xff && d[11] == 0xff &&
		      !(d[0] | d[1] | d[2] | d[3] | d[4] | d[5] | d[6] | d[7] | d[8] | d[9]);
	if (sa.family == AF_INET || mapped) {
		/* v4-mapped: the wire protocol is IPv4. */
		family = AF_INET;
		__builtin_memcpy(e->saddr, &here.saddr4, 4);
		if (mapped)
			__builtin_memcpy(e->daddr, &d[12], 4);
		else
			__builtin_memcpy(e->daddr, &sa.addr4, 4);
	} else if (sa.family == AF_INET6) {
		family = AF_INET6;
		__builtin_memcpy(e->saddr, here.saddr6, 16);
		__builtin_memcpy(e->daddr, d, 16);
	} else {
		/* No usable address given: no destination. */
		e->dport = 0;
		if (family == AF_INET6)
			__builtin_memcpy(e->saddr, here.saddr6, 16);
		else
			__builtin_memcpy(e->saddr, &here.saddr4, 4);
	}
	e->family = family;
	submit(e);
}

SEC("fexit/tcp_v4_connect")
int BPF_PROG(tw_connect4, struct sock *sk, const void *uaddr, int addr_len, int ret)
{
	/* An AF_INET6 socket connecting to a v4-mapped address fails here
	 * inside tcp_v6_connect, which reports it: once. */
	if (ret < 0 && sk->__sk_common.skc_family == AF_INET)
		connect_failed(sk, uaddr, addr_len, ret);
	return 0;
}

SEC("fexit/tcp_v6_connect")
int BPF_PROG(tw_connect6, struct sock *sk, const void *uaddr, int addr_len, int ret)
{
	if (ret < 0)
		connect_failed(sk, uaddr, addr_len, ret);
	return 0;
}
