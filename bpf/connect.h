/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * What connect() leaves behind in the tracepoint tier: each attempt
 * counted per process and destination (for `twtrace top`; no record
 * leaves the kernel), and the failure to find a source port, reported
 * from the state machine, or handed over to the precise tier's connect()
 * exits when they are attached. Part of the one object twtrace.bpf.c
 * builds.
 */

/* Connection attempts per process and destination, counted in the kernel
 * (no record leaves it) when count_connects is set: what `twtrace top`
 * shows as new connections per second. */
struct connect_key {
	u32 netns;
	u32 pid;
	u64 cgroup_id;       /* pid's cgroup v2, inside connect() */
	struct proc_id proc; /* who pid is */
	char comm[TASK_COMM_LEN];
	u8 daddr[16];
	u16 dport;    /* host order */
	u16 family;
	u32 pad;
};
/* Keeps struct connect_key in BTF for bpf2go. */
const struct connect_key *unused_connect_key __attribute__((unused));

/* Setting: count connect() attempts per process and destination. */
volatile const u32 count_connects = 0;

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

/* One connection attempt toward the destination connect() has just set on
 * sk, by the opener recorded in o (or current, when the owner table had no
 * room: we run inside connect()). Returns the attempts counted on this CPU
 * so far (for sampling stacks.h's captures), 0 when it could not count. */
static __always_inline u64 count_connect(const struct sock *sk, const struct sock_owner *o)
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
	/* Inside connect(): current is the opener. */
	current_proc(&k.proc);
	k.cgroup_id = bpf_get_current_cgroup_id();
	k.dport = bpf_ntohs(sk->__sk_common.skc_dport);
	k.family = family;
	if (family == AF_INET6) {
		__builtin_memcpy(k.daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		__be32 d4 = sk->__sk_common.skc_daddr;
		__builtin_memcpy(k.daddr, &d4, 4);
	}
	u64 *n = bpf_map_lookup_elem(&connects, &k);
	if (n)
		return ++(*n);
	u64 one = 1;
	if (bpf_map_update_elem(&connects, &k, &one, BPF_NOEXIST) == 0)
		return 1;
	/* Another CPU made the key just now: count on ours. */
	n = bpf_map_lookup_elem(&connects, &k);
	if (n)
		return ++(*n);
	count_lost(LOST_CONNECTS);
	return 0;
}

/* Set by userspace once the precise tier's connect() hooks are attached
 * (a bit per family of socket): they then report every failed connect,
 * and the tracepoint stops reporting EADDRNOTAVAIL for that family. */
volatile u32 connect_exits = 0;
enum connect_exit {
	CONNECT_EXIT4 = 1, /* tcp_v4_connect's: AF_INET sockets */
	CONNECT_EXIT6 = 2, /* tcp_v6_connect's: AF_INET6 sockets */
};
/* Keeps enum connect_exit in BTF for bpf2go. */
const enum connect_exit *unused_connect_exit __attribute__((unused));

/* The source of a connect() that has just failed, from the tracepoint to
 * tcp_v4/v6_connect's return (precise tier only). */
struct connect_source {
	u64 sk;
	u64 stack;      /* the caller's stack (stacks.h), 0 = not taken */
	u8 saddr6[16];  /* an AF_INET6 socket's */
	__be32 saddr4;  /* and the IPv4 one (of a v4-mapped connect too) */
	u16 sport;
	u16 pad;
};

/* Thread id -> its connect_source. LRU: an entry whose connect() exit
 * never ran (attached in between) is pushed out by newer ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, struct connect_source);
} connect_sources SEC(".maps");

/* SYN_SENT->CLOSE while the socket is still SS_UNCONNECTED happens only
 * inside a connect() that failed after setting SYN_SENT (see "connect()
 * and bind() failures" in docs/design.md):
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
	/* The record connecting() made a moment ago, in this connect(). */
	const struct sock_owner *o = owner_of(sk);
	u64 stack = o ? o->stack : 0;
	if (connect_exits & (sk->__sk_common.skc_family == AF_INET6 ? CONNECT_EXIT6 : CONNECT_EXIT4)) {
		/* The precise tier reports it when connect() returns, with the
		 * errno; the source address is gone by then (reset on the
		 * failure path since 6.1): hand it over. */
		struct connect_source src = { .sk = (u64)sk, .stack = stack, .sport = local_port(sk) };
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
	e->stack = stack;
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
