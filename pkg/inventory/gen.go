package inventory

//go:generate go tool bpf2go -tags linux -cc clang-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -type sock_record inventory ../../bpf/inventory.bpf.c -- -I../../vmlinux
