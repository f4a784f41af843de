// cppopen is copen in C++: the call is made in a method, whose mangled
// symbol (_ZN4shop6Client14openPerRequestEi) a symbolizer must print as
// shop::Client::openPerRequest(int).
#include <cstdio>
#include <unistd.h>

namespace {

// report prints the return address into its caller and the caller's line.
__attribute__((noinline)) void report(int line)
{
	std::printf("%#lx %d %s\n", (unsigned long)__builtin_return_address(0), line, __FILE__);
	std::fflush(stdout);
}

} // namespace

namespace shop {

struct Client {
	void openPerRequest(int attempt);
};

// openPerRequest stands where an application would call connect().
__attribute__((noinline)) void Client::openPerRequest(int attempt)
{
	if (attempt > 0)
		report(__LINE__);
}

} // namespace shop

int main()
{
	char c;

	shop::Client().openPerRequest(1);
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
