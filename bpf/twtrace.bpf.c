// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * twtrace: attribute every TIME_WAIT entry and every ephemeral-port failure
 * of connect()/bind() to the process responsible.
 *
 * This file is the TCP state diagram as twtrace follows it: one handler
 * per edge that matters, then set_state, which dispatches to them, and the
 * two tracepoint hooks (each a primary and its nested twin). Six event
 * kinds leave the kernel (enum event_kind); from the state diagram only
 * timewait and connect_error do: every other transition just updates
 * per-socket bookkeeping. The kernel facts behind each hook are in
 * docs/design.md.
 *
 * The headers hold the rest of this one object, by concern, included in
 * the order they depend on each other:
 *   record.h   the record userspace decodes, the ring buffer, loss
 *              counters, settings, helpers that fill a record
 *   follow.h   the followed process set, and how a fork grows it
 *   procs.h    who a process is (parent, executable, leader's comm), kept
 *              by the fork and exec hooks for every record to carry
 *   owners.h   per-socket owner records, listeners, timewait records
 *   connect.h  connect() attempts counted, failures to find a port
 *   stacks.h   the user stack of a connect(), its call site
 *   gohttp.h   the caller of a Go net/http dial, from its own goroutine
 *   twins.h    how a run the kernel skipped is still handled, once
 *   bind.h     bind() failures, at the syscall
 *   precise.h  the precise tier's fentry/fexit programs
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "record.h"
#include "follow.h"
#include "procs.h"
#include "owners.h"
#include "connect.h"
#include "stacks.h"
#include "gohttp.h"
#include "twins.h"
#include "bind.h"
#include "precise.h"

/* -------------------------------------------------------------------- */
/* sock:inet_sock_set_state — the TCP state diagram: a handler per edge  */
/* that matters, in the order a connection meets them. Every other edge  */
/* costs set_state a compare or two.                                     */
/* -------------------------------------------------------------------- */

/* CLOSE->SYN_SENT runs inside connect(): current is the opener. The
 * source port is not chosen yet; we only need who, when, and from where
 * in its code (stacks.h). */
static __always_inline void connecting(void *ctx, const struct sock *sk)
{
	if (!current_followed())
		return;
	struct sock_owner fresh = {
		.open_ns = bpf_ktime_get_ns(),
		.opener_pid = bpf_get_current_pid_tgid() >> 32,
		.role = ROLE_CLIENT,
	};
	current_comm(fresh.opener_comm);
	/* Counted before the record is made: the count samples the stack,
	 * and the opener is current either way. */
	u64 n = count_connects ? count_connect(sk, &fresh) : 0;
	fresh.stack = connect_stack(ctx, sock_netns(sk), n);
	int err = owner_insert(sk, &fresh);
	if (err == -EEXIST) {
		/* A record marked closed belongs to an earlier socket at this
		 * address whose move to CLOSE no program saw (every program on
		 * the tracepoint was skipped by the kernel's recursion guard,
		 * which happens, rarely, at saturation): its timewait entry, if
		 * it had one, is missing. Count it, never silently. */
		struct sock_owner *old = owner_of(sk);
		if (old) {
			if (old->closed)
				recover(old);
			*old = fresh;
		}
	}
}

/* CLOSE->LISTEN runs inside listen(): remember the server process so the
 * sockets it accepts can name it. */
static __always_inline void listening(const struct sock *sk)
{
	struct listen_key k = { .netns = sock_netns(sk), .port = local_port(sk) };
	struct listener l = { .pid = bpf_get_current_pid_tgid() >> 32 };
	current_comm(l.comm);
	bpf_map_update_elem(&listeners, &k, &l, BPF_ANY);
}

/* LISTEN->CLOSE: the listener is gone. */
static __always_inline void listener_closed(const struct sock *sk)
{
	struct listen_key k = { .netns = sock_netns(sk), .port = local_port(sk) };
	bpf_map_delete_elem(&listeners, &k);
}

/* The first close, in o: current is the closer, and what a timewait
 * event needs is kept in case the socket's end is missed (recover()). */
static __always_inline void record_close(struct sock_owner *o, const struct sock *sk)
{
	u64 id = bpf_get_current_pid_tgid();
	o->closer_pid = id >> 32;
	o->closer_tid = (u32)id;
	o->closer_cgroup = bpf_get_current_cgroup_id();
	current_comm(o->closer_comm);
	current_proc(&o->closer);
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
}

/* No connect() seen: accepted, if its local port is one a process listens
 * on in this namespace (connect() never picks a port held by listen() or
 * bind()). */
static __always_inline void accepted(struct sock_owner *o, const struct sock *sk)
{
	struct listen_key k = { .netns = sock_netns(sk), .port = local_port(sk) };
	struct listener *l = bpf_map_lookup_elem(&listeners, &k);
	if (l) {
		o->role = ROLE_SERVER;
		o->opener_pid = l->pid;
		__builtin_memcpy(o->opener_comm, l->comm, sizeof(o->opener_comm));
	}
}

/* ESTABLISHED->FIN_WAIT1 (or SYN_RECV->FIN_WAIT1) runs in close(),
 * shutdown() or the exit of the last holder: current closed first and
 * will own the TIME_WAIT. Accepted sockets, and sockets opened before we
 * attached, get their record here: the closer is known. */
static __always_inline void closing_first(const struct sock *sk)
{
	struct sock_owner *o = owner_of(sk);
	if (!o) {
		/* When following, a process outside the set closing first
		 * matters only for a socket a followed process opened. */
		if (!current_followed())
			return;
		struct sock_owner fresh = {};
		accepted(&fresh, sk);
		record_close(&fresh, sk);
		/* -EEXIST cannot happen: the socket's lock orders its
		 * transitions, and no record was there a moment ago. */
		owner_insert(sk, &fresh);
		return;
	}
	if (o->closed) {
		/* Either this very transition, handled a second time (a safety
		 * net: the twins' pending table keeps a twin from handling what
		 * its primary did), or a record left by an earlier socket at
		 * this address (see connecting()). The connection and the time
		 * tell them apart: a 4-tuple is reused only after its timewait
		 * socket is at least a second old (tcp_tw_reuse), a repeat
		 * comes within microseconds. */
		if (o->sport == local_port(sk) &&
		    o->dport == bpf_ntohs(sk->__sk_common.skc_dport) &&
		    o->family == sk->__sk_common.skc_family &&
		    bpf_ktime_get_ns() - o->close_ns < 1000000)
			return;
		recover(o);
		__builtin_memset(o, 0, sizeof(*o));
	}
	if (o->role == ROLE_UNKNOWN)
		accepted(o, sk);
	record_close(o, sk);
}

/* Any move to CLOSE ends our interest in the socket. Only FIN_WAIT2->CLOSE
 * and CLOSING->CLOSE hand the 4-tuple to a timewait socket (tcp_time_wait()
 * then tcp_done()); they run in softirq or timer context, so the identity
 * comes from the record, not current. */
static __always_inline void moved_to_close(const struct sock *sk, int oldstate)
{
	struct sock_owner *o = owner_of(sk);
	if (!o)
		return;
	/* Only FIN_WAIT1/2 and CLOSING follow a close that came first. Any
	 * other socket finding a record marked closed found the record of an
	 * earlier socket at this address whose end was missed (see
	 * connecting()). */
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
}

static __always_inline void set_state(void *ctx, const struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return;
	/* With a namespace filter, other namespaces cost nothing more. */
	if (target_netns && sock_netns(sk) != target_netns)
		return;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		connecting(ctx, sk);
	} else if (newstate == TCP_LISTEN) {
		listening(sk);
	} else if (oldstate == TCP_LISTEN) {
		/* LISTEN->SYN_RECV, a child cloned from it in softirq, gets no
		 * record: most accepted sockets never close first, and a record
		 * per socket would double the cost of a connection. The one
		 * that closes first is found by closing_first(). */
		if (newstate == TCP_CLOSE)
			listener_closed(sk);
	} else if (newstate == TCP_FIN_WAIT1) {
		/* FIN_WAIT1->FIN_WAIT1: close() after shutdown(), before the
		 * FIN was acked. The first one closed first; nothing changes. */
		if (oldstate != TCP_FIN_WAIT1)
			closing_first(sk);
	} else if (newstate == TCP_CLOSE) {
		/* SYN_SENT->CLOSE inside connect(): no port was found. */
		if (oldstate == TCP_SYN_SENT && wanted(EVENT_CONNECT_ERROR))
			failed_connect(sk);
		moved_to_close(sk, oldstate);
	}
	/* Every other edge (SYN_SENT->ESTABLISHED, FIN_WAIT1->FIN_WAIT2,
	 * ->CLOSE_WAIT, ->LAST_ACK, ...) changes nothing we keep. */
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tw_state, const struct sock *sk, int oldstate, int newstate)
{
	struct guard *g = primary_enter(GUARD_STATE);
	set_state(ctx, sk, oldstate, newstate);
	primary_exit(g, ctx, sk, state_edge(oldstate, newstate));
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tw_state_nest, const struct sock *sk, int oldstate, int newstate)
{
	struct guard *g = guard_of(GUARD_STATE);
	if (twin_must_run(g, ctx, sk, state_edge(oldstate, newstate))) {
		set_state(ctx, sk, oldstate, newstate);
		g->rescued++;
	}
	return 0;
}

/* An RST in FIN_WAIT2 also moves the socket to CLOSE, with no timewait
 * socket behind it: mark it so the move is not reported. */
static __always_inline void receive_reset(const struct sock *sk)
{
	struct sock_owner *o = owner_of(sk);
	if (o)
		o->reset = 1;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tw_reset, struct sock *sk)
{
	struct guard *g = primary_enter(GUARD_RESET);
	receive_reset(sk);
	primary_exit(g, ctx, sk, 0);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tw_reset_nest, struct sock *sk)
{
	struct guard *g = guard_of(GUARD_RESET);
	if (twin_must_run(g, ctx, sk, 0)) {
		receive_reset(sk);
		g->rescued++;
	}
	return 0;
}
