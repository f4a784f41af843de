/* A client that opens a connection per request, as a C program would:
 * open_per_request() calls connect() itself, through glibc's wrapper,
 * which sets up no frame. Usage: per_request IP PORT N [LINGER_MS
 * [threaded]]. It connects N times in turn, closing first each time,
 * prints its pid, waits LINGER_MS, and exits when its stdin ends (at once
 * for /dev/null): a test can keep it alive while its stack is read. With
 * "threaded", a second thread idles meanwhile: glibc's connect() then
 * takes its cancellable path, which moves the stack pointer. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Not static and not inlined: the symbol keeps its name at every
 * optimization level (no .constprop or .isra suffix). */
__attribute__((noinline)) int open_per_request(const struct sockaddr_in *dest)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)dest, sizeof(*dest)) != 0) { /* the call site */
		close(fd);
		return -1;
	}
	return fd;
}

static void *idle(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 6) {
		fprintf(stderr, "usage: %s IP PORT N [LINGER_MS [threaded]]\n", argv[0]);
		return 2;
	}
	pthread_t thread;
	if (argc == 6 && pthread_create(&thread, NULL, idle, NULL) != 0) {
		perror("pthread_create");
		return 1;
	}
	struct sockaddr_in dest;
	memset(&dest, 0, sizeof(dest));
	dest.sin_family = AF_INET;
	dest.sin_port = htons((unsigned short)atoi(argv[2]));
	if (inet_pton(AF_INET, argv[1], &dest.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", argv[1]);
		return 2;
	}
	int n = atoi(argv[3]);
	for (int i = 0; i < n; i++) {
		int fd = open_per_request(&dest);
		if (fd < 0) {
			perror("connect");
			return 1;
		}
		close(fd);
	}
	printf("%d\n", (int)getpid());
	fflush(stdout);
	if (argc >= 5)
		usleep((useconds_t)atoi(argv[4]) * 1000);
	char c;
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
