/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Following a process tree (`twtrace run`): the set of followed processes,
 * grown in the kernel at every fork (by tw_fork, in procs.h) so that no
 * child escapes however briefly it lives, and the test every hook makes
 * before it records anything about current. Part of the one object twtrace.bpf.c builds.
 */

/* Only processes in the followed set (and what they fork) make records:
 * `twtrace run` follows its command and every descendant. */
volatile const u32 follow = 0;

/* Followed processes (tgid -> 1), when follow is set: seeded by
 * userspace, grown by tw_fork at every fork of a followed process, so a
 * child is followed from its first instruction, however short it lives.
 * An entry outlives its process (its sockets close in exit_files(),
 * after the exit tracepoint); a fork that reuses the pid drops it, and
 * userspace sweeps the pids that are gone. Sized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u8);
} followed SEC(".maps");

/* Whether current's records count: always, unless following. */
static __always_inline bool current_followed(void)
{
	if (!follow)
		return true;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&followed, &tgid) != NULL;
}

/* A fork of a followed process: the child is followed before it runs.
 * (A new thread has its parent's tgid: nothing to do.) Called by tw_fork
 * (procs.h) only when following. */
static __always_inline void follow_fork(struct task_struct *parent, struct task_struct *child)
{
	u32 ptgid = parent->tgid, ctgid = child->tgid;
	if (ptgid == ctgid)
		return;
	if (bpf_map_lookup_elem(&followed, &ptgid)) {
		u8 one = 1;
		if (bpf_map_update_elem(&followed, &ctgid, &one, BPF_ANY))
			count_lost(LOST_FOLLOW);
	} else {
		/* The pid of a followed process that is gone, reused. */
		bpf_map_delete_elem(&followed, &ctgid);
	}
}
