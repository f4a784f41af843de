package tracer

//go:generate go tool bpf2go -tags linux -cc clang-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -type event -type event_kind -type end_reason -type role -type lost_slot -type connect_exit -type guard -type sock_owner -type proc_id -type connect_key -type listen_key -type listener -type user_stack twtrace ../../bpf/twtrace.bpf.c -- -I../../vmlinux
