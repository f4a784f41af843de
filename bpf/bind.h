/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * bind() failures. bind(0) changes no TCP state, so its failure is only
 * seen at the syscall: the entry notes the socket and the address asked
 * for, the exit reports EADDRINUSE (no ephemeral port left). These hooks
 * are attached only when bind_error is asked for: enabling a syscall
 * tracepoint slows every syscall on the host (see failed_connect() in
 * connect.h). Part of the one object twtrace.bpf.c builds.
 */

/* A bind() in flight, per thread, between entry and exit. */
struct bind_call {
	u64 sk;
	u32 netns;
	u16 family;
	u16 port;   /* requested port (host order) */
	u8 kind;
	u8 pad[7];
	u8 addr[16];  /* requested address */
};

/* Thread id -> its bind() in flight. LRU: an entry whose exit never ran
 * (the thread was killed, or we detached in between) is pushed out by
 * newer ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct bind_call);
} binds SEC(".maps");

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
	struct bind_call p = {};
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
	bpf_map_update_elem(&binds, &tid, &p, BPF_ANY);
	return 0;
}

/* The syscall's verdict for this thread's bind() in flight, of `kind`. */
static __always_inline int exit_call(long ret, u8 kind, long want)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct bind_call *p = bpf_map_lookup_elem(&binds, &tid);
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
	bpf_map_delete_elem(&binds, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_bind")
int tw_exit_bind(struct trace_event_raw_sys_exit *ctx)
{
	return exit_call(ctx->ret, EVENT_BIND_ERROR, EADDRINUSE);
}
