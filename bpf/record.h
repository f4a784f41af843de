/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * What leaves the kernel, and what is counted when it cannot: the record
 * userspace decodes (struct event) and the enums it carries, the ring
 * buffer and the per-CPU loss counters, the settings userspace writes
 * before load, and the small helpers every hook uses to fill a record from
 * current or from a socket. Part of the one object twtrace.bpf.c builds.
 */

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define EADDRINUSE 98
#define EADDRNOTAVAIL 99
#define EEXIST 17

/* A map update's result, as an int: before 6.4 the JIT calls a map's
 * update directly, and that function returned int, so only the low 32
 * bits of the helper's result are the error (-EEXIST came back as
 * 0xffffffef). */
#define update_result(call) ((int)(call))
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

/* What a record reports (struct event.kind): six kinds leave the kernel,
 * three of them from the precise tier only. pkg/event has the same
 * numbers (a test pins them to these). */
enum event_kind {
	EVENT_TIMEWAIT = 1,
	EVENT_CONNECT_ERROR = 2,
	EVENT_BIND_ERROR = 3,
	/* The precise tier only (fentry/fexit, where the kernel allows). */
	EVENT_TIMEWAIT_END = 4,  /* a timewait socket went away */
	EVENT_TW_OVERFLOW = 5,   /* closed with no timewait: tcp_max_tw_buckets */
	EVENT_TW_REUSE = 6,      /* connect() took over a timewait socket */
	/* Not reported as such: a connect() stack seen for the first time
	 * (stacks.h), for userspace to read its process's mappings. */
	EVENT_STACK = 7,
};

/* Why a timewait socket ended (EVENT_TIMEWAIT_END). */
enum end_reason {
	END_EXPIRED = 1,  /* its timer ran out */
	END_RST = 2,      /* an RST killed it (tcp_rfc1337=0) */
	END_SYN = 3,      /* a new SYN from the peer took it over */
	END_REUSED = 4,   /* a local connect() took it over (tcp_tw_reuse) */
	END_KILLED = 5,   /* anything else: its namespace went away, ... */
};

/* Who opened the connection that leaves a timewait entry (struct
 * event.role). */
enum role {
	ROLE_UNKNOWN = 0,
	ROLE_CLIENT = 1,
	ROLE_SERVER = 2,
};

/* What a record says about the process responsible when it acted,
 * recorded then (bpf/procs.h): it may be gone before userspace reads. */
struct proc_id {
	u32 ppid;     /* tgid of its parent (as of its fork); 0 = unknown */
	u32 exe_dev;  /* its executable's device, major << 20 | minor; 0 = unknown */
	u64 exe_ino;  /* its executable's inode; 0 = unknown (kernel threads) */
	char comm[TASK_COMM_LEN]; /* its thread-group leader's comm */
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
	struct proc_id proc; /* the process in pid */
	u64 stack;      /* the opener's connect() stack (stacks.h); 0 = not taken */
};

/* A timewait entry whose move to CLOSE no program saw, reported when its
 * record was found later: the time is the close, the rest is exact. */
#define EVENT_F_RECOVERED 1
/* A timewait entry seen where the kernel made the timewait socket
 * (inet_twsk_alloc returned one): the precise tier. */
#define EVENT_F_CONFIRMED 2

/* Keep struct event and its enums in BTF so bpf2go can generate their Go
 * twins (-type). */
const struct event *unused_event __attribute__((unused));
const enum event_kind *unused_event_kind __attribute__((unused));
const enum end_reason *unused_end_reason __attribute__((unused));
const enum role *unused_role __attribute__((unused));

/* Settings, written by userspace before load. The kinds to report: bit
 * 1 << kind for each enum event_kind. */
volatile const u32 events_mask = 0xffffffff;
/* Only report this network namespace (inode); 0 = every namespace. */
volatile const u32 target_netns = 0;
/* Wake the reader only once this many bytes wait in the ring buffer; below
 * it, userspace polls on a timer (a wake-up costs microseconds: see
 * "Delivery: no wake-up per record" in docs/design.md). */
volatile const u64 wakeup_bytes = 1 << 20;

/* struct event records for userspace, every kind; sized by the loader
 * (Options.RingBufferSize). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* What could not be recorded, never lost silently: a slot of the lost
 * counters each. Userspace reads them by these names (bpf2go -type). */
enum lost_slot {
	LOST_RECORDS = 0,   /* records that did not fit in the ring buffer */
	LOST_OWNERS = 1,    /* sockets the owner table had no room for */
	RECOVERED_ENDS = 2, /* timewait entries reported late: no program saw
			     * their end (see recover()) */
	LOST_CONNECTS = 3,  /* connection attempts the connects table had no
			     * room to count */
	LOST_FOLLOW = 4,    /* processes forked by followed ones that the
			     * followed set had no room for */
	LOST_TW = 5,        /* timewait sockets the precise tier's table had
			     * no room for: their end is not reported */
	LOST_PARENTS = 6,   /* identities made again after the cache pushed
			     * them out, with the parent unknown (procs.h) */
	LOST_STACKS = 7,    /* connect() stacks the stack table had no room
			     * for (stacks.h) */
	LOST_SLOTS,
};
/* Keeps enum lost_slot in BTF for bpf2go. */
const enum lost_slot *unused_lost_slot __attribute__((unused));

/* enum lost_slot -> count, per CPU: no atomic operation. Userspace sums
 * the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOST_SLOTS);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

static __always_inline bool wanted(u8 kind)
{
	return events_mask & (1u << kind);
}

static __always_inline bool netns_wanted(u32 netns)
{
	return target_netns == 0 || target_netns == netns;
}

static __always_inline void count_lost(enum lost_slot what)
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

/* current's process, as procs.h keeps it (defined there). */
static __always_inline void current_proc(struct proc_id *id);

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
	current_proc(&e->proc);
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

/* sk's addresses, zero-padded to 16 bytes (4 for AF_INET). */
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
