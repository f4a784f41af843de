// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The floor for `make bench`: a bare counter on the same tracepoint twtrace
 * watches, attached the way bpftrace's `@c = count()` is (a classic
 * tracepoint, one per-CPU increment). Whatever a tracer costs above this is
 * its own work.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} transitions SEC(".maps");

SEC("tracepoint/sock/inet_sock_set_state")
int count_transition(void *ctx)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&transitions, &zero);
	if (n)
		(*n)++;
	return 0;
}
