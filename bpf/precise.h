/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The precise tier: fentry/fexit on the functions that make, reuse and
 * end timewait sockets, and on tcp_v4/v6_connect. Loaded and attached only
 * where the kernel allows it (userspace tries, and falls back to the
 * tracepoints alone when it cannot; see "The precise tier" in
 * docs/design.md). These programs have no twins: their skipped runs are
 * counted as missed. Part of the one object twtrace.bpf.c builds.
 */

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
	struct proc_id proc; /* who pid is */
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
	e->proc = ti->proc;
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
	struct sock_owner *o = owner_of(sk);
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
	ti.proc = o->closer;
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
		if (src->sk == (u64)sk) {
			here = *src;
			e->stack = src->stack;
		}
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
