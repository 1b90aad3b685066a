/* pingloop: a client that sends PING to a Redis server over a unix socket in a loop and records the
 * gap between consecutive replies: the longest gap in a window is the longest time Redis left a
 * client waiting, i.e. the pause that client saw.
 *
 *   pingloop SOCKET [SLEEP_US]
 *
 * SLEEP_US (default 100) is slept between a reply and the next PING, so the loop does not take a
 * whole CPU. Windows are set on stdin: a line "mark NAME" ends the current window (its statistics are
 * printed as one line on stdout, labelled with the previous mark's name) and starts one called NAME;
 * "quit" (or EOF) ends the last window and exits. Output:
 *   NAME pings=N secs=S max_gap_us=G p99_gap_us=G median_gap_us=G max_gap_at_s=T
 * where max_gap_at_s is the end of the longest gap in seconds from the window's start.
 * With PINGLOOP_TRACE_US=N in the environment, every gap of N us or more is also printed on stderr
 * as "gap G_us ends T" with T in CLOCK_MONOTONIC seconds, to set beside a LIVESNAP_DEBUG trace. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int64_t now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static uint32_t *gaps;
static size_t ngaps, cap;
static int64_t win_start, max_at;
static uint32_t max_gap;
static char name[128] = "start";

static void report(int64_t now)
{
	uint32_t p99 = 0, med = 0;
	if (ngaps) {
		qsort(gaps, ngaps, sizeof *gaps, cmp_u32);
		p99 = gaps[(size_t)((ngaps - 1) * 0.99)];
		med = gaps[(ngaps - 1) / 2];
	}
	printf("%s pings=%zu secs=%.3f max_gap_us=%u p99_gap_us=%u median_gap_us=%u max_gap_at_s=%.3f\n",
	       name, ngaps, (now - win_start) / 1e6, max_gap, p99, med, (max_at - win_start) / 1e6);
	fflush(stdout);
	ngaps = 0;
	max_gap = 0;
	max_at = now;
	win_start = now;
}

/* Returns 1 to go on, 0 to quit. */
static int control(void)
{
	static char buf[4096];
	static size_t len;
	ssize_t n = read(0, buf + len, sizeof buf - 1 - len);
	if (n <= 0) {
		report(now_us());
		return 0;
	}
	len += (size_t)n;
	char *nl;
	while ((nl = memchr(buf, '\n', len))) {
		*nl = 0;
		int64_t now = now_us();
		if (!strncmp(buf, "mark ", 5)) {
			report(now);
			snprintf(name, sizeof name, "%.120s", buf + 5);
		} else if (!strcmp(buf, "quit")) {
			report(now);
			return 0;
		}
		len -= (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, len);
	}
	if (len == sizeof buf - 1)
		len = 0;
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: pingloop SOCKET [SLEEP_US]\n");
		return 2;
	}
	long sleep_us = argc > 2 ? atol(argv[2]) : 100;
	const char *trace = getenv("PINGLOOP_TRACE_US");
	uint32_t trace_us = trace ? (uint32_t)atol(trace) : 0;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		perror("pingloop: connect");
		return 1;
	}
	cap = 1 << 16;
	gaps = malloc(cap * sizeof *gaps);
	win_start = max_at = now_us();
	int64_t last = win_start;
	char rbuf[64];
	for (;;) {
		struct pollfd p = {.fd = 0, .events = POLLIN};
		if (poll(&p, 1, 0) > 0 && !control())
			return 0;
		if (write(fd, "PING\r\n", 6) != 6) {
			perror("pingloop: write");
			return 1;
		}
		size_t got = 0;
		while (got < 7) { /* "+PONG\r\n" */
			ssize_t n = read(fd, rbuf + got, sizeof rbuf - got);
			if (n <= 0) {
				if (n < 0 && errno == EINTR)
					continue;
				fprintf(stderr, "pingloop: connection lost\n");
				report(now_us());
				return 1;
			}
			got += (size_t)n;
		}
		int64_t now = now_us();
		uint32_t gap = (uint32_t)(now - last);
		last = now;
		if (ngaps == cap)
			gaps = realloc(gaps, (cap *= 2) * sizeof *gaps);
		gaps[ngaps++] = gap;
		if (trace_us > 0 && gap >= trace_us)
			fprintf(stderr, "gap %u ends %.6f\n", gap, now / 1e6);
		if (gap > max_gap) {
			max_gap = gap;
			max_at = now;
		}
		if (sleep_us > 0)
			usleep((useconds_t)sleep_us);
	}
}
