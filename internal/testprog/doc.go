// Package testprog holds small programs that tests build and run as real
// processes: goopen (Go), copen (C) and cppopen (C++), the last two built
// by the tests with clang. Each reports on stdout where its own call site
// is, so a test can check a symbolizer against figures the program
// computed itself, and stays alive until its stdin closes, so the test
// can read it while it lives.
package testprog
