package main

//go:generate go tool bpf2go -tags linux -cc clang-14 -cflags "-O2 -g -Wall -Werror" -target bpfel counter ../../bpf/counter.bpf.c -- -I../../vmlinux
