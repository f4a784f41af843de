/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The per-socket record that carries who opened a connection and who
 * closed it first from their syscalls to the softirq where the socket
 * leaves for a timewait socket (current there is no one's), the
 * listeners that name the opener of an accepted socket, and the timewait
 * records made from them, on time or recovered late. Part of the one
 * object twtrace.bpf.c builds.
 */

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
	/* At the first close, for recovering a missed end (see recover()).
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
	u32 pad3;
	struct proc_id closer; /* who closer_pid is */
	u64 stack; /* the opener's connect() stack, 0 = not taken (stacks.h) */
};

/* A listening socket's owner, found by accepted children through
 * (netns, local port): the child's birth runs in softirq. */
struct listen_key {
	u32 netns;
	u16 port;
	u16 pad;
};

/* Who called listen() on that port. */
struct listener {
	u32 pid;
	char comm[TASK_COMM_LEN];
};

/* Socket pointer -> owner, from connect() (or the first close) to the move
 * to CLOSE, where the entry is deleted. Not preallocated: the table holds
 * only the sockets open now (a few hundred on most hosts), where a
 * preallocated one kept 30 MiB on every node for its 131,072 entries; an
 * insert costs ~30-50 ns more (docs/performance.md). Sized by the loader;
 * when it is full, or an entry cannot be allocated, the socket goes
 * untracked and is counted (never silently). No entry outlives its
 * socket: every socket we record ends with a move to CLOSE while we are
 * attached (or the map goes with us). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 131072);
	__type(key, u64);
	__type(value, struct sock_owner);
} owners SEC(".maps");

/* (netns, port) -> its listener, from listen() to the listening socket's
 * close. LRU: listeners seeded by userspace for sockets that listened
 * before we attached are never closed under our eyes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listen_key);
	__type(value, struct listener);
} listeners SEC(".maps");

/* Owner record of sk, or NULL. */
static __always_inline struct sock_owner *owner_of(const struct sock *sk)
{
	u64 key = (u64)sk;
	return bpf_map_lookup_elem(&owners, &key);
}

/* Makes fresh (whole, on the caller's stack) the record of sk with one
 * walk of the table: each walk is a cache miss or two, and looking up,
 * inserting an empty record and looking it up again took three. Returns
 * 0; -EEXIST when sk has a record already, left as it is; another error
 * when the table is full, counted (the socket goes untracked). */
static __always_inline int owner_insert(const struct sock *sk, const struct sock_owner *fresh)
{
	u64 key = (u64)sk;
	int err = update_result(bpf_map_update_elem(&owners, &key, fresh, BPF_NOEXIST));
	if (err && err != -EEXIST)
		count_lost(LOST_OWNERS);
	return err;
}

/* The socket's end: its record goes with it. */
static __always_inline void owner_drop(const struct sock *sk)
{
	u64 key = (u64)sk;
	bpf_map_delete_elem(&owners, &key);
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
	e->proc = o->closer;
	e->stack = o->stack;
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
	 * latter before the move to CLOSE (see "The socket's life, and whose
	 * current to trust" in docs/design.md). */
	e->sport = local_port(sk);
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	read_addrs(sk, e->family, e->saddr, e->daddr);
	payload(sk, &e->bytes_sent, &e->bytes_received);
	submit(e);
}
