/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The nested twins: how a transition whose program run the kernel skipped
 * is still handled, once. Used by the hooks in twtrace.bpf.c; the
 * reasoning and its history are in "Skipped runs: the nested twins" in
 * docs/design.md. Part of the one object twtrace.bpf.c builds.
 *
 * The BTF-typed tracepoints: arguments straight from the call site, no
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
 * Why every transition goes through this, even the ~60 % that set_state()
 * ignores (SYN_SENT->ESTABLISHED, ->CLOSE_WAIT, ...): the count of skipped
 * runs the kernel keeps is per program, whatever the edge, and the twin
 * can only count the skipped runs it can tell apart. For an edge the
 * primary returned from without a mark, the twin cannot tell a skipped
 * run from one that returned early; marking busy alone would leave out the
 * runs skipped in the instructions the kernel runs around the program
 * (it marks the program running before its first one), and userspace
 * would report them as missed. The mark is kept cheap instead: the table
 * is packed, so a primary and its twin compare against the one or two
 * entries there, not every slot.
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

/* Entries of the pending table: more than the call sites with entries left
 * behind at once (see above). */
#define PENDING 8

/* One hook's twin machinery on one CPU. The pending entries are packed
 * in the first pend_n slots, so that the common table (the entry of the
 * invocation under way, perhaps one left behind) costs a compare or two,
 * not a scan of every slot. */
struct guard {
	u64 busy;               /* its primary is running on this CPU */
	u64 seq;                /* entries made, to find the oldest */
	u64 pend_ctx[PENDING];  /* the invocation (its ctx address) */
	u64 pend_sk[PENDING];   /* the socket of the transition it handled */
	u64 pend_seq[PENDING];  /* when (seq), to find the oldest */
	u32 pend_edge[PENDING]; /* and its (oldstate, newstate) */
	u32 pend_n;             /* slots in use: [0, pend_n) */
	u32 pad;
	u64 rescued;            /* transitions its twins handled: read by userspace */
};

/* Hook (GUARD_STATE, GUARD_RESET) -> its guard, per CPU: the table is only
 * ever touched by programs on its own CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, struct guard);
} guards SEC(".maps");

#define GUARD_STATE 0 /* inet_sock_set_state */
#define GUARD_RESET 1 /* tcp_receive_reset */

static __always_inline struct guard *guard_of(u32 slot)
{
	return bpf_map_lookup_elem(&guards, &slot);
}

/* Note a handled transition as pending for the twin of the same
 * invocation: its slot if it has one (left behind by an earlier
 * invocation at that address whose twin was skipped), else a new one at
 * the end, else the oldest. It runs with the CPU marked busy: no twin
 * nested in it touches the table. */
static __always_inline void pend(struct guard *g, u64 ctx, u64 sk, u32 edge)
{
	u32 n = g->pend_n, slot = PENDING;
	for (u32 i = 0; i < PENDING; i++) {
		if (i >= n)
			break;
		if (g->pend_ctx[i] == ctx) {
			slot = i;
			break;
		}
	}
	if (slot == PENDING && n < PENDING) {
		slot = n;
		g->pend_n = n + 1;
	} else if (slot == PENDING) {
		u64 oldest = ~0ULL;
		for (u32 i = 0; i < PENDING; i++) {
			if (g->pend_seq[i] < oldest) {
				oldest = g->pend_seq[i];
				slot = i;
			}
		}
	}
	slot &= PENDING - 1;
	g->pend_ctx[slot] = ctx;
	g->pend_sk[slot] = sk;
	g->pend_edge[slot] = edge;
	g->pend_seq[slot] = ++g->seq;
}

/* The twin's question: did the primary of this invocation handle this
 * transition? If so, take it off the table: the last entry moves into
 * its slot. A primary nested in this (its own twin skipped) may add an
 * entry meanwhile and see it dropped by the count written last: that
 * entry was left behind anyway, no twin looks for it. */
static __always_inline bool unpend(struct guard *g, u64 ctx, u64 sk, u32 edge)
{
	u32 n = g->pend_n;
	for (u32 i = 0; i < PENDING; i++) {
		if (i >= n)
			break;
		if (g->pend_ctx[i] != ctx)
			continue;
		if (g->pend_sk[i] != sk || g->pend_edge[i] != edge)
			return false;
		u32 last = (n - 1) & (PENDING - 1);
		g->pend_ctx[i] = g->pend_ctx[last];
		g->pend_sk[i] = g->pend_sk[last];
		g->pend_edge[i] = g->pend_edge[last];
		g->pend_seq[i] = g->pend_seq[last];
		g->pend_n = n - 1;
		return true;
	}
	return false;
}

/* The primary's side, before it handles the transition: its CPU marked
 * busy in the guard of hook slot (GUARD_*), which it returns. */
static __always_inline struct guard *primary_enter(u32 slot)
{
	struct guard *g = guard_of(slot);
	if (g)
		g->busy = 1;
	return g;
}

/* The primary's side, after: the transition (sk, edge) is pending for the
 * twin of this invocation (ctx), and the CPU no longer busy. */
static __always_inline void primary_exit(struct guard *g, const void *ctx, const struct sock *sk,
					 u32 edge)
{
	if (g) {
		pend(g, (u64)ctx, (u64)sk, edge);
		g->busy = 0;
	}
}

/* The twin's question, g being the guard of its hook: must it handle the
 * transition (sk, edge) because its primary did not? Yes while the CPU is
 * busy (the primary is underneath, interrupted: the kernel skipped it for
 * this one) or when the invocation (ctx) has no entry for it. A twin that
 * handles it counts it in g->rescued. */
static __always_inline bool twin_must_run(struct guard *g, const void *ctx, const struct sock *sk,
					  u32 edge)
{
	return g && (g->busy || !unpend(g, (u64)ctx, (u64)sk, edge));
}

/* A state transition as the pending table knows it. */
static __always_inline u32 state_edge(int oldstate, int newstate)
{
	return (u32)oldstate << 8 | (u32)newstate;
}
