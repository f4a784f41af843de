/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The call site of a connect(): the user stack of the thread inside
 * connect(), captured at CLOSE->SYN_SENT (both tiers), kept once per
 * distinct stack in a bounded table, and named in the socket's records by
 * a 64-bit hash of its frames. Userspace symbolizes it (pkg/symbol). Part
 * of the one object twtrace.bpf.c builds; see "Call sites" in
 * docs/design.md.
 */

#define STACK_FRAMES 64

/* A user stack as bpf_get_stack() walks it: frame 0 is where the thread
 * entered the kernel (libc's connect, Go's syscall stub), then the return
 * addresses found through frame pointers. A syscall wrapper that sets up
 * no frame (glibc's connect, Go's Syscall6) hides its caller from that
 * walk: ret is the candidate return address into it, the word at the user
 * stack pointer (x86-64) or the link register (arm64) at syscall entry.
 * Userspace uses it only where the code there says a call returns to it. */
struct user_stack {
	u32 nr;   /* frames in ip */
	u32 pid;  /* the process it was first seen in */
	u64 ret;  /* 0 = not known (kernels before 5.15) */
	/* That process's executable and where its code was mapped, for a
	 * process gone before userspace read its mappings: the executable's
	 * frames are still placed. */
	u64 exe_ino;
	u32 exe_dev;
	/* 0: a stack from inside a system call; STACK_ENTRY: from a
	 * function's entry (a uprobe), ip[0] the entry itself, not an address
	 * to resume at; STACK_PAIR (gohttp.h): two stacks' ids. */
	u32 kind;
	u64 start_code;
	u64 end_code;
	u64 ip[STACK_FRAMES];
};
#define STACK_SYSCALL 0
#define STACK_ENTRY 2
/* Keeps struct user_stack in BTF for bpf2go. */
const struct user_stack *unused_user_stack __attribute__((unused));

/* Settings, written by userspace before load: capture the stack of every
 * connect (1), of the first STACK_FIRST of each process and destination
 * then one in stack_sample (>1, with count_connects), or none (0). */
volatile const u32 stack_sample = 0;
#define STACK_FIRST 8

/* Where a stack is walked, per CPU (512 bytes are too many for the BPF
 * stack). Only connect() captures, in process context: no run on this
 * CPU can interrupt another's use of it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct user_stack);
} stack_scratch SEC(".maps");

/* Hash of the frames -> the stack. Not preallocated: a host has few
 * distinct connect() stacks (560 bytes each, 8.8 MiB if ever full).
 * Entries stay while we run: a record names its stack by hash, and a
 * call site is worth keeping. Full: counted (LOST_STACKS). Sized by the
 * loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct user_stack);
} stacks SEC(".maps");

/* Registers of x86-64 and arm64 as CO-RE finds them: one object serves
 * both, and only the fields that exist in the running kernel's pt_regs are
 * read. */
struct pt_regs___x86 {
	unsigned long sp;
} __attribute__((preserve_access_index));
struct pt_regs___arm64 {
	u64 regs[31];
} __attribute__((preserve_access_index));

/* The candidate return address into the caller of a frameless syscall
 * wrapper (see struct user_stack), or 0. */
static __always_inline u64 wrapper_return(void)
{
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return 0;
	/* Both helpers came in by 5.15; the one asked about, last. */
	void *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
	u64 ret = 0;
	if (bpf_core_field_exists(struct pt_regs___arm64, regs)) {
		struct pt_regs___arm64 *r = regs;
		ret = BPF_CORE_READ(r, regs[30]);
	} else if (bpf_core_field_exists(struct pt_regs___x86, sp)) {
		struct pt_regs___x86 *r = regs;
		u64 sp = BPF_CORE_READ(r, sp);
		if (bpf_probe_read_user(&ret, sizeof(ret), (void *)sp))
			ret = 0;
	}
	return ret;
}

/* FNV-1a over the frames, 8 bytes at a time: equal stacks, equal hash;
 * never 0 (0 means "no stack" in a record). */
static __always_inline u64 stack_hash(const struct user_stack *s)
{
	u64 h = 0xcbf29ce484222325ULL ^ s->ret;
	for (int i = 0; i < STACK_FRAMES; i++) {
		if (i >= s->nr)
			break;
		h ^= s->ip[i];
		h *= 0x100000001b3ULL;
	}
	return h ? h : 1;
}

/* Whether the n-th connect of a process toward a destination (0: not
 * counted) has its stack taken. */
static __always_inline bool stack_wanted(u64 n)
{
	if (stack_sample == 0)
		return false;
	if (stack_sample == 1 || n == 0)
		return true;
	return n <= STACK_FIRST || n % stack_sample == 0;
}

/* current's user stack (of kind STACK_SYSCALL or STACK_ENTRY), kept in stacks; its hash, or 0 when there is
 * none (a kernel thread, an io-wq worker, a walk that failed) or the
 * table is full (counted). A stack seen for the first time is announced
 * to userspace (EVENT_STACK), which reads what symbolizing it needs while
 * the process lives. */
static __always_inline u64 capture_stack(void *ctx, u32 netns, u32 kind)
{
	u32 zero = 0;
	struct user_stack *s = bpf_map_lookup_elem(&stack_scratch, &zero);
	if (!s)
		return 0;
	long n = bpf_get_stack(ctx, s->ip, sizeof(s->ip), BPF_F_USER_STACK);
	if (n <= 0)
		return 0;
	s->nr = n / sizeof(s->ip[0]);
	s->kind = kind;
	s->pid = bpf_get_current_pid_tgid() >> 32;
	s->ret = wrapper_return();
	struct task_struct *task = (void *)bpf_get_current_task();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	struct proc_entry exe = {};
	exe_of(mm, &exe);
	s->exe_ino = exe.exe_ino;
	s->exe_dev = exe.exe_dev;
	s->start_code = BPF_CORE_READ(mm, start_code);
	s->end_code = BPF_CORE_READ(mm, end_code);
	u64 h = stack_hash(s);
	int err = update_result(bpf_map_update_elem(&stacks, &h, s, BPF_NOEXIST));
	if (err == -EEXIST)
		return h;
	if (err) {
		count_lost(LOST_STACKS);
		return 0;
	}
	struct event *e = current_event(EVENT_STACK, netns);
	if (e) {
		e->stack = h;
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	}
	return h;
}
