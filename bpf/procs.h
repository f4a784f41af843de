/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Who a process is, recorded in the kernel when it acts: its parent, its
 * executable and its leader's name (struct proc_id), put in every record
 * and connect count. Userspace cannot find them later: a curl in a loop
 * has exited long before its record is read.
 *
 * The parent and the executable come from a cache per process (procs),
 * kept right by two hooks that run for every process on the host, not only
 * the traced ones: a fork writes the child's entry (its parent is who
 * forked it, kept when it is reparented later), an exec rewrites the
 * executable. A process we never saw fork (older than twtrace) gets its
 * entry from current the first time it acts. The leader's comm is read
 * when the process acts: a process may rename itself at any time. Part of
 * the one object twtrace.bpf.c builds; struct proc_id, the part of
 * the record it fills, is in record.h.
 */

/* A cached identity, valid for the process whose leader started at
 * start_ns: a pid is reused, and an entry of a dead process is never
 * deleted (LRU), only found stale. */
struct proc_entry {
	u64 start_ns; /* the leader's task_struct.start_time */
	u64 exe_ino;
	u32 ppid;
	u32 exe_dev;
};

/* tgid -> its identity. LRU: entries of exited processes are pushed out
 * by new ones, with no exit hook. An entry pushed out while its process
 * lives is made again from current: exact, but for the parent of a
 * process forked since the fork hook was attached (it may have been
 * reparented): that is left unknown and counted (LOST_PARENTS).
 * Preallocated, ~3 MiB: the default pid_max of a small host. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, u32);
	__type(value, struct proc_entry);
} procs SEC(".maps");

/* CLOCK_MONOTONIC when the fork hook was attached, set by userspace right
 * after (0 until then): a process that started later had its fork seen. */
volatile u64 procs_since = 0;

/* The executable behind mm, as (device, inode); zeros for no mm (a
 * kernel thread, or a process past exit_mm()). */
static __always_inline void exe_of(struct mm_struct *mm, struct proc_entry *p)
{
	struct inode *ino = BPF_CORE_READ(mm, exe_file, f_inode);
	p->exe_ino = BPF_CORE_READ(ino, i_ino);
	p->exe_dev = BPF_CORE_READ(ino, i_sb, s_dev);
}

/* current's process entry, made from current (task, whose group leader is
 * leader) when missing or stale. */
static __always_inline void current_entry(struct task_struct *task, struct task_struct *leader,
					  u32 tgid, struct proc_entry *p)
{
	u64 start = BPF_CORE_READ(leader, start_time);
	struct proc_entry *cached = bpf_map_lookup_elem(&procs, &tgid);
	if (cached && cached->start_ns == start) {
		*p = *cached;
		return;
	}
	p->start_ns = start;
	exe_of(BPF_CORE_READ(task, mm), p);
	if (procs_since && start > procs_since) {
		/* Its fork was seen, and its entry pushed out since: its
		 * parent now may be a reaper that adopted it. */
		p->ppid = 0;
		count_lost(LOST_PARENTS);
	} else {
		p->ppid = BPF_CORE_READ(leader, real_parent, tgid);
	}
	bpf_map_update_elem(&procs, &tgid, p, BPF_ANY);
}

/* The identity of current's process, in process context. */
static __always_inline void current_proc(struct proc_id *id)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	/* Read once: each read of a task field here is a helper call. */
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct proc_entry p = {};
	current_entry(task, leader, bpf_get_current_pid_tgid() >> 32, &p);
	id->ppid = p.ppid;
	id->exe_dev = p.exe_dev;
	id->exe_ino = p.exe_ino;
	bpf_core_read_str(id->comm, TASK_COMM_LEN, &leader->comm);
}

/* A new process: its entry is its parent's executable (the child's mm is
 * a copy), with the forking process as parent. CLONE_PARENT children get
 * the real parent, the one the kernel gave them. A new thread (same tgid)
 * changes nothing. */
static __always_inline void procs_fork(struct task_struct *child)
{
	u32 tgid = child->tgid;
	if (child->pid != tgid)
		return;
	struct proc_entry p = {
		.start_ns = child->start_time,
		.ppid = child->real_parent->tgid,
	};
	exe_of(child->mm, &p);
	bpf_map_update_elem(&procs, &tgid, &p, BPF_ANY);
}

/* A process replaced its program: a new executable, the same parent.
 * After exec the caller is the leader, its start time the old leader's. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(tw_exec, struct task_struct *task, int old_pid, struct linux_binprm *bprm)
{
	u32 tgid = task->tgid;
	struct proc_entry p = {};
	current_entry(task, task->group_leader, tgid, &p);
	exe_of(task->mm, &p);
	bpf_map_update_elem(&procs, &tgid, &p, BPF_ANY);
	return 0;
}

/* Every fork on the host: the identity cache, and (when following) the
 * followed set, in one program: one run per fork instead of two. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(tw_fork, struct task_struct *parent, struct task_struct *child)
{
	procs_fork(child);
	if (follow)
		follow_fork(parent, child);
	return 0;
}
