/* loadgen: a SET load on a Redis server over a unix socket, over the key space redis-benchmark's
 * "-t set -r KEYSPACE" uses (key:%012d, uniformly random), with latency statistics per window.
 *
 *   loadgen SOCKET CONNS KEYSPACE VALUE_BYTES [RATE]
 *
 * CONNS connections each keep one SET outstanding (redis-benchmark -c CONNS -P 1). Values are
 * slices of a random pool of printable bytes (about as compressible as run.sh's populated values),
 * so the RDB's size does not depend on how long the load ran. With RATE = 0 (default) the load is
 * closed-loop like redis-benchmark: a connection sends its next SET when the reply comes. With
 * RATE > 0 requests are due at RATE per second and a request's latency counts from when it was due,
 * not when a free connection sent it (so a stalled server is not hidden by the load slowing down
 * with it).
 *
 * With LOADGEN_TICK_MS=N in the environment it also writes, every N ms, to stderr:
 *   tick T n=N max_us=M over_1ms=K
 * (T: CLOCK_MONOTONIC seconds at the tick's end; N replies, the longest latency and how many took over
 * 1 ms in it), which
 * timeline.sh lays beside a dump's phases.
 *
 * Windows are set on stdin as for pingloop: "mark NAME" ends the current window and starts NAME,
 * "quit" or EOF ends the last and exits. Each window prints one line:
 *   NAME n=N secs=S rps=R p50_us=.. p99_us=.. p999_us=.. max_us=.. errors=E over_1ms=.. over_10ms=..
 * "span NAME SECS" starts, beside the marked windows, one of a fixed length, reported the same way when
 * it has run SECS seconds (or at the next span, or at the end): the same stretch of traffic after two
 * snapshots that last for different times.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
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

struct conn {
	int fd;
	int busy;
	int64_t t0;      /* when the outstanding request was due (or sent) */
	size_t rlen;     /* bytes of the reply read so far */
	char rbuf[256];
};

/* A window of replies: the current one (cut by marks), or a span of fixed length that runs beside it. */
struct window {
	uint32_t *lat;
	size_t n, cap, errors;
	int64_t start, end; /* end: a span's; 0 for the marked window */
	char name[128];
};
static struct window win = {.name = "start"}, span;
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static int64_t tick_us, tick_end;
static size_t tick_n, tick_over_1ms;
static uint32_t tick_max;

static void tick(int64_t now)
{
	while (tick_us > 0 && now >= tick_end) {
		fprintf(stderr, "tick %.6f n=%zu max_us=%u over_1ms=%zu\n", tick_end / 1e6, tick_n, tick_max,
			tick_over_1ms);
		tick_n = 0;
		tick_over_1ms = 0;
		tick_max = 0;
		tick_end += tick_us;
	}
}

static uint64_t xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void report(struct window *w, int64_t now)
{
	uint32_t p50 = 0, p99 = 0, p999 = 0, max = 0;
	size_t over_1ms = 0, over_10ms = 0;
	for (size_t i = 0; i < w->n; i++) {
		over_1ms += w->lat[i] > 1000;
		over_10ms += w->lat[i] > 10000;
	}
	if (w->n) {
		qsort(w->lat, w->n, sizeof *w->lat, cmp_u32);
		p50 = w->lat[(size_t)((w->n - 1) * 0.5)];
		p99 = w->lat[(size_t)((w->n - 1) * 0.99)];
		p999 = w->lat[(size_t)((w->n - 1) * 0.999)];
		max = w->lat[w->n - 1];
	}
	double secs = (now - w->start) / 1e6;
	printf("%s n=%zu secs=%.3f rps=%.0f p50_us=%u p99_us=%u p999_us=%u max_us=%u errors=%zu over_1ms=%zu "
	       "over_10ms=%zu\n",
	       w->name, w->n, secs, secs > 0 ? w->n / secs : 0, p50, p99, p999, max, w->errors, over_1ms, over_10ms);
	fflush(stdout);
	w->n = 0;
	w->errors = 0;
	w->start = now;
}

static void record(struct window *w, uint32_t us, int error)
{
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 1 << 20;
		w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
		if (!w->lat) {
			fprintf(stderr, "loadgen: out of memory\n");
			exit(1);
		}
	}
	w->lat[w->n++] = us;
	w->errors += error;
}

/* A span that has run its length is reported, stamped with its end. */
static void span_check(int64_t now)
{
	if (span.end > 0 && now >= span.end) {
		report(&span, span.end);
		span.end = 0;
	}
}

static int control(void)
{
	static char buf[4096];
	static size_t len;
	ssize_t n = read(0, buf + len, sizeof buf - 1 - len);
	if (n <= 0) {
		report(&win, now_us());
		if (span.end > 0)
			report(&span, now_us());
		return 0;
	}
	len += (size_t)n;
	char *nl;
	while ((nl = memchr(buf, '\n', len))) {
		*nl = 0;
		int64_t now = now_us();
		if (!strncmp(buf, "mark ", 5)) {
			report(&win, now);
			snprintf(win.name, sizeof win.name, "%.120s", buf + 5);
		} else if (!strncmp(buf, "span ", 5)) {
			char sname[128];
			double secs;
			if (sscanf(buf + 5, "%120s %lf", sname, &secs) == 2 && secs > 0) {
				if (span.end > 0)
					report(&span, now);
				snprintf(span.name, sizeof span.name, "%s", sname);
				span.n = span.errors = 0;
				span.start = now;
				span.end = now + (int64_t)(secs * 1e6);
			}
		} else if (!strcmp(buf, "quit")) {
			report(&win, now);
			if (span.end > 0)
				report(&span, now);
			return 0;
		}
		len -= (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, len);
	}
	if (len == sizeof buf - 1)
		len = 0;
	return 1;
}

static char *req, *pool;
static size_t reqlen, keyoff, valoff, vallen;
static long keyspace;
#define POOL_BYTES 65536

static void send_set(struct conn *c, int64_t due)
{
	char key[16];
	snprintf(key, sizeof key, "%012ld", (long)(xorshift() % (uint64_t)keyspace));
	memcpy(req + keyoff, key, 12);
	memcpy(req + valoff, pool + xorshift() % (POOL_BYTES - vallen), vallen);
	size_t off = 0;
	while (off < reqlen) { /* the socket buffer takes a request of a few hundred bytes at once */
		ssize_t n = write(c->fd, req + off, reqlen - off);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			perror("loadgen: write");
			exit(1);
		}
		off += (size_t)n;
	}
	c->busy = 1;
	c->t0 = due;
	c->rlen = 0;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: loadgen SOCKET CONNS KEYSPACE VALUE_BYTES [RATE]\n");
		return 2;
	}
	int nconn = atoi(argv[2]);
	keyspace = atol(argv[3]);
	long vlen = atol(argv[4]);
	double rate = argc > 5 ? atof(argv[5]) : 0;
	if (nconn < 1 || keyspace < 1 || vlen < 1)
		return 2;
	rng ^= (uint64_t)getpid() << 32 ^ (uint64_t)now_us();

	/* *3\r\n$3\r\nSET\r\n$16\r\nkey:NNNNNNNNNNNN\r\n$VLEN\r\nxxx...\r\n */
	req = malloc((size_t)vlen + 128);
	int h = sprintf(req, "*3\r\n$3\r\nSET\r\n$16\r\nkey:");
	keyoff = (size_t)h;
	h += sprintf(req + h, "000000000000\r\n$%ld\r\n", vlen);
	valoff = (size_t)h;
	vallen = (size_t)vlen;
	if (vallen > POOL_BYTES / 2) {
		fprintf(stderr, "loadgen: VALUE_BYTES at most %d\n", POOL_BYTES / 2);
		return 2;
	}
	pool = malloc(POOL_BYTES);
	for (size_t i = 0; i < POOL_BYTES; i++)
		pool[i] = (char)(33 + xorshift() % 94);
	memset(req + h, 'x', (size_t)vlen);
	memcpy(req + h + vlen, "\r\n", 2);
	reqlen = (size_t)h + (size_t)vlen + 2;

	int ep = epoll_create1(0);
	struct conn *cs = calloc((size_t)nconn, sizeof *cs);
	for (int i = 0; i < nconn; i++) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[1]);
		cs[i].fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(cs[i].fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
			perror("loadgen: connect");
			return 1;
		}
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
	epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);

	int64_t start = now_us();
	win.start = start;
	if (getenv("LOADGEN_TICK_MS")) {
		tick_us = atol(getenv("LOADGEN_TICK_MS")) * 1000;
		tick_end = start + tick_us;
	}
	uint64_t issued = 0; /* open loop: requests sent so far; request k is due at start + k / rate */
	for (;;) {
		int64_t now = now_us();
		for (int i = 0; i < nconn; i++) {
			if (cs[i].busy)
				continue;
			if (rate <= 0) {
				send_set(&cs[i], now);
			} else {
				int64_t due = start + (int64_t)(issued * 1e6 / rate);
				if (due > now)
					break;
				send_set(&cs[i], due);
				issued++;
			}
		}
		/* Open loop: sleep until the next request is due (if a connection is free to send it). */
		struct timespec ts, *tsp = NULL, tick_ts;
		if (rate > 0) {
			int free_conn = 0;
			for (int i = 0; i < nconn && !free_conn; i++)
				free_conn = !cs[i].busy;
			if (free_conn) {
				int64_t wait = start + (int64_t)(issued * 1e6 / rate) - now_us();
				if (wait < 0)
					wait = 0;
				ts.tv_sec = wait / 1000000;
				ts.tv_nsec = (wait % 1000000) * 1000;
				tsp = &ts;
			}
		}
		/* Wake for the next tick and a span's end, even with every connection stuck. */
		int64_t wake = tick_us > 0 ? tick_end : 0;
		if (span.end > 0 && (wake == 0 || span.end < wake))
			wake = span.end;
		if (wake > 0) {
			int64_t wait = wake - now_us();
			if (wait < 0)
				wait = 0;
			if (!tsp || wait < tsp->tv_sec * 1000000 + tsp->tv_nsec / 1000) {
				tick_ts.tv_sec = wait / 1000000;
				tick_ts.tv_nsec = (wait % 1000000) * 1000;
				tsp = &tick_ts;
			}
		}
		struct epoll_event evs[64];
		int n = epoll_pwait2(ep, evs, 64, tsp, NULL);
		tick(now_us());
		span_check(now_us());
		if (n < 0 && errno != EINTR) {
			perror("loadgen: epoll_wait");
			return 1;
		}
		for (int k = 0; k < n; k++) {
			if (evs[k].data.u32 == UINT32_MAX) {
				if (!control())
					return 0;
				continue;
			}
			struct conn *c = &cs[evs[k].data.u32];
			ssize_t r = read(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - 1 - c->rlen);
			if (r <= 0) {
				if (r < 0 && (errno == EINTR || errno == EAGAIN))
					continue;
				fprintf(stderr, "loadgen: connection lost\n");
				report(&win, now_us());
				return 1;
			}
			c->rlen += (size_t)r;
			if (!memchr(c->rbuf, '\n', c->rlen))
				continue;
			int64_t t = now_us();
			span_check(t);
			record(&win, (uint32_t)(t - c->t0), c->rbuf[0] != '+');
			if (span.end > 0)
				record(&span, (uint32_t)(t - c->t0), c->rbuf[0] != '+');
			tick_n++;
			if (t - c->t0 > 1000)
				tick_over_1ms++;
			if ((uint32_t)(t - c->t0) > tick_max)
				tick_max = (uint32_t)(t - c->t0);
			c->busy = 0;
			c->rlen = 0;
		}
	}
}
