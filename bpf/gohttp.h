/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Go's net/http dials in a goroutine of its own: the stack of its
 * connect() ends in (*Transport).dialConnFor, and the application's line
 * that asked for the connection is on another goroutine's stack. Two
 * uprobes, attached by userspace to the executables whose connect()
 * stacks show net/http (Go 1.18 and later: the register ABI), bridge the
 * two:
 *   queueForDial(w *wantConn), in the caller's goroutine: its stack is
 *     taken (sampled) and kept under (process, w);
 *   dialConnFor(w *wantConn), in the dial goroutine: (process, g) -> w,
 *     g being the goroutine (R14 on x86-64, X28 on arm64: Go keeps it
 *     there in all its code, system call stubs included).
 * At CLOSE->SYN_SENT, inside connect(), the connecting thread's g (read
 * from its user registers, kernels 5.15 and later) leads to w, and w to
 * the caller's stack: the socket's stack is then a pair (connect()'s,
 * the caller's), kept in stacks like any stack. Userspace names the
 * caller's site only when connect()'s own stack passes through net/http's
 * dial, so that a goroutine whose g was recycled cannot borrow a stale
 * caller. Part of the one object twtrace.bpf.c builds; see "Call sites"
 * in docs/design.md.
 */

struct pt_regs;

/* Registers as CO-RE finds them (see stacks.h): Go's register ABI passes
 * a method's receiver and first argument in RAX, RBX (x86-64) or R0, R1
 * (arm64), and keeps the current goroutine in R14 or R28. */
struct pt_regs___go_x86 {
	unsigned long bx;
	unsigned long r14;
} __attribute__((preserve_access_index));

/* A pair of stacks in the stack table (struct user_stack's kind): ip[0]
 * the connect() stack's id, ip[1] the caller's. */
#define STACK_PAIR 1

/* What a Go goroutine or value is known by: its address in a process. */
struct go_key {
	u32 pid;
	u32 pad;
	u64 addr;
};

/* Set by userspace once the uprobes are attached to an executable: until
 * then connect() pays nothing for them. */
volatile u32 go_http_attached = 0;

/* (pid, w) -> the stack of the goroutine that queued w for a dial. LRU: a
 * dial that never connected (cancelled) ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct go_key);
	__type(value, u64);
} go_http_callers SEC(".maps");

/* (pid, g) -> the w that goroutine g dials for. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct go_key);
	__type(value, u64);
} go_http_dials SEC(".maps");

/* Dials queued per process: the sampling of the callers' stacks (the
 * first STACK_FIRST of a process, then one in stack_sample). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, u64);
} go_http_queued SEC(".maps");

/* Go's first argument after the receiver, and the goroutine, from regs;
 * false on an architecture this does not know. */
static __always_inline bool go_arg_and_g(void *regs, u64 *arg, u64 *g)
{
	if (bpf_core_field_exists(struct pt_regs___arm64, regs)) {
		struct pt_regs___arm64 *r = regs;
		*arg = BPF_CORE_READ(r, regs[1]);
		*g = BPF_CORE_READ(r, regs[28]);
		return true;
	}
	if (bpf_core_field_exists(struct pt_regs___go_x86, r14)) {
		struct pt_regs___go_x86 *r = regs;
		*arg = BPF_CORE_READ(r, bx);
		*g = BPF_CORE_READ(r, r14);
		return true;
	}
	return false;
}

static __always_inline u32 current_netns(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	return BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
}

/* Whether the n-th dial a process queued has its caller's stack taken. */
static __always_inline bool go_caller_wanted(u32 pid)
{
	if (stack_sample <= 1)
		return stack_sample == 1;
	u64 *n = bpf_map_lookup_elem(&go_http_queued, &pid);
	if (!n) {
		u64 one = 1;
		bpf_map_update_elem(&go_http_queued, &pid, &one, BPF_ANY);
		return true;
	}
	/* Not atomic: two CPUs may count one dial (sampling need not be
	 * exact), and a fetching atomic needs 5.12. */
	u64 c = ++(*n);
	return c <= STACK_FIRST || c % stack_sample == 0;
}

/* net/http.(*Transport).queueForDial(w): the caller's goroutine. */
SEC("uprobe")
int tw_http_queue(struct pt_regs *ctx)
{
	if (!current_followed())
		return 0;
	u64 w, g;
	if (!go_arg_and_g(ctx, &w, &g))
		return 0;
	u32 netns = current_netns();
	if (!netns_wanted(netns))
		return 0;
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (!go_caller_wanted(pid))
		return 0;
	u64 h = capture_stack(ctx, netns, STACK_ENTRY);
	if (!h)
		return 0;
	struct go_key k = { .pid = pid, .addr = w };
	bpf_map_update_elem(&go_http_callers, &k, &h, BPF_ANY);
	return 0;
}

/* net/http.(*Transport).dialConnFor(w): the dial goroutine. */
SEC("uprobe")
int tw_http_dial(struct pt_regs *ctx)
{
	if (!current_followed())
		return 0;
	u64 w, g;
	if (!go_arg_and_g(ctx, &w, &g))
		return 0;
	struct go_key k = { .pid = bpf_get_current_pid_tgid() >> 32, .addr = g };
	bpf_map_update_elem(&go_http_dials, &k, &w, BPF_ANY);
	return 0;
}

/* The caller's stack of a connect() made by a net/http dial goroutine
 * (consumed: one connect per dial), or 0. dial is set when current is
 * such a goroutine, its caller's stack sampled or not. */
static __always_inline u64 go_http_caller(bool *dial)
{
	*dial = false;
	if (!go_http_attached || !bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return 0;
	void *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
	u64 unused, g;
	if (!go_arg_and_g(regs, &unused, &g))
		return 0;
	struct go_key k = { .pid = bpf_get_current_pid_tgid() >> 32, .addr = g };
	u64 *wp = bpf_map_lookup_elem(&go_http_dials, &k);
	if (!wp)
		return 0;
	*dial = true;
	u64 w = *wp;
	bpf_map_delete_elem(&go_http_dials, &k);
	k.addr = w;
	u64 *h = bpf_map_lookup_elem(&go_http_callers, &k);
	if (!h)
		return 0;
	u64 caller = *h;
	bpf_map_delete_elem(&go_http_callers, &k);
	return caller;
}

/* own (the connect() stack just captured, still in stack_scratch) and
 * caller kept as one entry of the stack table, of kind STACK_PAIR: ip[0]
 * own, ip[1] caller. Its id, announced when new; own when the table is
 * full (counted). */
static __always_inline u64 pair_stack(u64 own, u64 caller, u32 netns)
{
	u32 zero = 0;
	struct user_stack *s = bpf_map_lookup_elem(&stack_scratch, &zero);
	if (!s)
		return own;
	s->kind = STACK_PAIR;
	s->nr = 2;
	s->ret = 0;
	s->ip[0] = own;
	s->ip[1] = caller;
	u64 h = stack_hash(s) ^ 0x9e3779b97f4a7c15ULL; /* apart from a stack of two frames */
	h = h ? h : 1;
	int err = update_result(bpf_map_update_elem(&stacks, &h, s, BPF_NOEXIST));
	if (err == -EEXIST)
		return h;
	if (err) {
		count_lost(LOST_STACKS);
		return own;
	}
	struct event *e = current_event(EVENT_STACK, netns);
	if (e) {
		e->stack = h;
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	}
	return h;
}

/* The stack a connect() records (the n-th of its process and destination
 * on this CPU, 0 if not counted): in a net/http dial goroutine, the pair
 * of its own and its caller's when the caller's was taken (the sampling
 * was decided there), else none; elsewhere its own, sampled. */
static __always_inline u64 connect_stack(void *ctx, u32 netns, u64 n)
{
	if (stack_sample == 0)
		return 0;
	bool dial;
	u64 caller = go_http_caller(&dial);
	if (!dial)
		return stack_wanted(n) ? capture_stack(ctx, netns, STACK_SYSCALL) : 0;
	if (!caller)
		return 0;
	u64 own = capture_stack(ctx, netns, STACK_SYSCALL);
	return own ? pair_stack(own, caller, netns) : 0;
}
