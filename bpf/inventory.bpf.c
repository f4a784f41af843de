// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * inventory: one fixed-size record per TCP socket of a network namespace.
 *
 * iter/tcp walks the listening hash, then the established hash, which also
 * holds the timewait and request sockets of the namespace whose thread
 * opened the iterator. Userspace reads the records from the iterator's fd
 * (see pkg/inventory). DESIGN.md §4-§5 for the kernel facts used here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10

#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12

/* Record flags. */
#define SOCK_F_BOUND 1      /* the port's bind bucket is bind()'s or listen()'s */
#define SOCK_F_TIMESTAMPS 2 /* timewait socket that saw TCP timestamps */
#define SOCK_F_TIMER 4      /* remaining_jiffies is a timewait timer */

/* What userspace reads, back to back, one per socket. */
struct sock_record {
	u8 saddr[16]; /* AF_INET: the first 4 bytes */
	u8 daddr[16];
	u32 remaining_jiffies; /* timewait timer left, 0 once due */
	u16 family;
	u16 sport; /* host order */
	u16 dport; /* host order */
	u8 state;
	u8 substate; /* tw_substate for a timewait socket, else state */
	u8 flags;    /* SOCK_F_* */
	u8 pad[3];
};

/* Emits the record's BTF for bpf2go -type. */
const struct sock_record *unused_sock_record __attribute__((unused));

/* connect() picks a port only from buckets it made itself (fastreuse and
 * fastreuseport both -1, __inet_hash_connect); a bucket made or joined by
 * bind() or listen() is skipped for every destination. */
static __always_inline bool bound_bucket(const struct inet_bind_bucket *tb)
{
	return tb && (tb->fastreuse >= 0 || tb->fastreuseport >= 0);
}

SEC("iter/tcp")
int inventory_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sock_record rec = {};

	if (!skc)
		return 0; /* the end of the walk */
	rec.family = skc->skc_family;
	if (rec.family != AF_INET && rec.family != AF_INET6)
		return 0;
	rec.state = skc->skc_state;
	/* Request sockets are half-open connections owned by their listener:
	 * they hold no port of their own. */
	if (rec.state == TCP_NEW_SYN_RECV)
		return 0;

	rec.substate = rec.state;
	/* skc_num is the local port in host order, for timewait sockets too
	 * (tw_num); skc_dport is in network order. */
	rec.sport = skc->skc_num;
	rec.dport = bpf_ntohs(skc->skc_dport);
	if (rec.family == AF_INET) {
		__be32 saddr = skc->skc_rcv_saddr, daddr = skc->skc_daddr;

		__builtin_memcpy(rec.saddr, &saddr, 4);
		__builtin_memcpy(rec.daddr, &daddr, 4);
	} else {
		for (int i = 0; i < 4; i++) {
			__be32 s = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			__be32 d = skc->skc_v6_daddr.in6_u.u6_addr32[i];

			__builtin_memcpy(&rec.saddr[i * 4], &s, 4);
			__builtin_memcpy(&rec.daddr[i * 4], &d, 4);
		}
	}

	if (rec.state == TCP_TIME_WAIT) {
		/* A timewait socket is not a struct sock: its state lives in
		 * tw_substate (TIME_WAIT, or FIN_WAIT2 for an orphan waiting for
		 * the peer's FIN) and its end in a timer. */
		struct tcp_timewait_sock *tw = bpf_skc_to_tcp_timewait_sock(skc);

		if (tw) {
			s64 left = (s64)(tw->tw_sk.tw_timer.expires - bpf_jiffies64());

			rec.substate = tw->tw_sk.tw_substate;
			rec.remaining_jiffies = left <= 0 ? 0 : left > 0xffffffff ? 0xffffffff : (u32)left;
			rec.flags |= SOCK_F_TIMER;
			if (tw->tw_ts_recent_stamp != 0)
				rec.flags |= SOCK_F_TIMESTAMPS;
			if (bound_bucket(tw->tw_sk.tw_tb))
				rec.flags |= SOCK_F_BOUND;
		}
	} else {
		/* Listening, established and closing sockets are full TCP
		 * sockets; tcp_sock starts with inet_connection_sock. */
		struct inet_connection_sock *icsk = (void *)bpf_skc_to_tcp_sock(skc);

		if (icsk && bound_bucket(icsk->icsk_bind_hash))
			rec.flags |= SOCK_F_BOUND;
	}

	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}
