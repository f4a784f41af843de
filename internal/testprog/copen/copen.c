// copen reports the return address and line of a call made in its
// open_per_request(), as "0x<pc> <line> <file>", then lives until its
// stdin closes. pkg/symbol's tests build it with clang, with and without
// DWARF, and check that the address resolves to that function (and line);
// with -DHOSTILE_NAME its symbol carries terminal escapes.
#include <stdio.h>
#include <unistd.h>

// report prints the return address into its caller, what a frame-pointer
// walk finds there.
static __attribute__((noinline)) void report(int line)
{
	printf("%#lx %d %s\n", (unsigned long)__builtin_return_address(0), line, __FILE__);
	fflush(stdout);
}

#ifdef HOSTILE_NAME
// The name a hostile binary could give it: an escape sequence that clears
// the screen, then a right-to-left override.
void open_per_request(void) __asm__("open_per_request\x1b[2J\xe2\x80\xae");
#endif

// open_per_request stands where an application would call connect().
__attribute__((noinline)) void open_per_request(void)
{
	report(__LINE__);
}

int main(void)
{
	char c;

	open_per_request();
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
