/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The kernel types twtrace reads, and nothing else.
 *
 * Each struct lists only the fields we touch. preserve_access_index makes
 * clang record every access as a CO-RE relocation, so the loader finds the
 * real offsets in the running kernel's BTF: this header is a list of our
 * kernel surface, not a copy of any one kernel's layout.
 */
#ifndef TWTRACE_VMLINUX_H
#define TWTRACE_VMLINUX_H

typedef unsigned char __u8;
typedef short int __s16;
typedef short unsigned int __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long int __s64;
typedef long long unsigned int __u64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
/* Not read by twtrace: bpf_helper_defs.h declares helpers that take it. */
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

/* bpf_ringbuf_submit() flags and bpf_ringbuf_query() selectors. */
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

/* Map creation flags. */
enum {
	BPF_F_NO_PREALLOC = 1,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

/* bpf_get_stack() flags. */
enum {
	BPF_F_USER_STACK = 256,
};

/* Helpers, for CO-RE to ask whether the running kernel has one
 * (bpf_core_enum_value_exists): stacks.h. */
enum bpf_func_id {
	BPF_FUNC_task_pt_regs = 175,
};

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

/* Tracepoint contexts (the records described in tracefs .../format). */
struct trace_entry {
	short unsigned int type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
} __attribute__((preserve_access_index));

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long int id;
	long unsigned int args[6];
} __attribute__((preserve_access_index));

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long int id;
	long int ret;
} __attribute__((preserve_access_index));

/* Network namespace identity: the inode number userspace sees in /proc/PID/ns/net. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	short unsigned int skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	long unsigned int skc_flags;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct socket;

struct sock {
	struct sock_common __sk_common;
	u16 sk_type;
	u16 sk_protocol;
	struct socket *sk_socket;
} __attribute__((preserve_access_index));

/* Before Linux 6.18 the socket flags were struct sock's own sk_flags;
 * since, they live in sock_common (skc_flags). */
struct sock___old {
	long unsigned int sk_flags;
} __attribute__((preserve_access_index));

struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
} __attribute__((preserve_access_index));

struct tcp_sock {
	u64 bytes_received;
	u64 bytes_sent;
	u64 bytes_retrans;
} __attribute__((preserve_access_index));

enum sock_flags {
	SOCK_DEAD = 0,
	SOCK_DONE = 1,
};

/* fd -> struct file -> struct socket -> struct sock, for bind(); socket state for connect(). */
typedef enum {
	SS_FREE = 0,
	SS_UNCONNECTED = 1,
	SS_CONNECTING = 2,
	SS_CONNECTED = 3,
	SS_DISCONNECTING = 4,
} socket_state;

struct socket {
	socket_state state;
	struct sock *sk;
} __attribute__((preserve_access_index));

struct inode;

struct file {
	void *private_data;
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
	struct task_struct *group_leader;
	char comm[16];
	struct files_struct *files;
	/* A process's identity (bpf/procs.h). */
	struct task_struct *real_parent;
	struct mm_struct *mm;
	u64 start_time; /* CLOCK_MONOTONIC ns */
	/* Its network namespace, where no socket says it (gohttp.h). */
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

struct nsproxy {
	struct net *net_ns;
} __attribute__((preserve_access_index));

struct mm_struct {
	struct file *exe_file;
	/* Where the executable's code is mapped (stacks.h). */
	unsigned long start_code;
	unsigned long end_code;
} __attribute__((preserve_access_index));

struct super_block {
	u32 s_dev; /* dev_t: major << 20 | minor */
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

/* Passed to the exec tracepoint; not read. */
struct linux_binprm;

/*
 * The TCP socket iterator (bpf/inventory.bpf.c): its context, and what a
 * timewait socket and a bind bucket tell about a port.
 */
struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
} __attribute__((preserve_access_index));

/* fastreuse and fastreuseport are -1 while only connect() holds the port,
 * >= 0 once bind() or listen() does. */
struct inet_bind_bucket {
	signed char fastreuse;
	signed char fastreuseport;
} __attribute__((preserve_access_index));

struct inet_connection_sock {
	struct inet_bind_bucket *icsk_bind_hash;
} __attribute__((preserve_access_index));

struct timer_list {
	long unsigned int expires;
} __attribute__((preserve_access_index));

/* A timewait socket begins with the same sock_common as a full one. */
struct inet_timewait_sock {
	struct sock_common __tw_common;
	unsigned char tw_substate;
	struct timer_list tw_timer;
	struct inet_bind_bucket *tw_tb;
} __attribute__((preserve_access_index));

struct tcp_timewait_sock {
	struct inet_timewait_sock tw_sk;
	int tw_ts_recent_stamp;
} __attribute__((preserve_access_index));

#endif /* TWTRACE_VMLINUX_H */
