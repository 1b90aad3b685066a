/* vmread: reads every private writable mapping of process PID with process_vm_readv, CHUNK_KIB at a
 * time into one reused buffer, and prints the rate: the speed at which another process can read the
 * target's memory, an upper bound for any copier of it.
 *
 *   vmread PID [CHUNK_KIB]      prints: bytes=B secs=S mb_per_s=R (MB = 10^6 bytes) */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: vmread PID [CHUNK_KIB]\n");
		return 2;
	}
	int pid = atoi(argv[1]);
	size_t chunk = (argc > 2 ? (size_t)atol(argv[2]) : 1024) << 10;
	char path[64], line[512], *buf = malloc(chunk);
	snprintf(path, sizeof path, "/proc/%d/maps", pid);
	FILE *f = fopen(path, "r");
	if (!f || !buf) {
		perror("vmread");
		return 1;
	}
	uint64_t total = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 || strcmp(perms, "rw-p"))
			continue;
		for (unsigned long a = lo; a < hi; a += chunk) {
			size_t len = hi - a < chunk ? hi - a : chunk;
			struct iovec l = {buf, len}, r = {(void *)a, len};
			ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
			if (n > 0)
				total += (uint64_t)n;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("bytes=%llu secs=%.3f mb_per_s=%.0f\n", (unsigned long long)total, s, total / s / 1e6);
	return 0;
}
