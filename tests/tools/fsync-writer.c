/*
 * fsync-writer: a crash-consistency probe for block devices and files.
 *
 *   fsync-writer write  TARGET LOG [-s SIZE] [-o BASE] [-b BS] [-n EVERY] [-j JOBS] [-c COUNT]
 *                                  [-t SECONDS] [-S SEED] [-d] [-f]
 *   fsync-writer verify TARGET LOG [-d] [-q]
 *
 * write: JOBS threads write numbered records of BS bytes (a multiple of 4 KiB) at pseudo-random,
 * BS-aligned offsets of [BASE, BASE+SIZE) of TARGET (a block device, or a file that is created and
 * fallocated to BASE+SIZE). Job j owns the record slots j, j+JOBS, j+2*JOBS, ... so neighbouring
 * slots -- the same cluster of an image -- are written by different threads at once. Every 4 KiB of
 * a record carries its own header (run, job, sequence number, byte offset, sub-block index) and a
 * CRC32C over the whole 4 KiB; the rest is a pseudo-random payload derived from those numbers, so a
 * torn record shows as 4 KiB pieces of different records, never as a valid one. Each job calls
 * fdatasync (-f: fsync) after every EVERY of its records; once it returns, the job appends
 * "ack RUN JOB SEQ" to LOG with one write() and fdatasyncs LOG (which must live outside the device
 * under test). LOG starts with a "run" line holding every parameter, so verify needs none; several
 * runs may follow one another in one LOG (later runs are newer).
 *
 * The offset of record SEQ of job J is a function of (seed, J, SEQ), so verify can replay which
 * 4 KiB blocks every acknowledged record covered. For each block it knows the newest acknowledged
 * record (run, seq); the block must hold that record or a newer one of the same slot (a write that
 * landed without being acknowledged) -- never an older one (STALE), never zeros (LOST), never a
 * record whose checksum, payload or placement is wrong (CORRUPT). A block no acknowledged record
 * covers may hold zeros or any valid record for that offset; anything else is GARBAGE.
 *
 * Exit codes: 0 done / verified; 1 verification failed; 2 usage; 3 write error; 4 sync error;
 * 5 log error; 6 read error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SUB 4096u
#define MAGIC 0x3130434552575346ULL	/* "FSWREC01" */
#define MAX_JOBS 64
#define MAX_RUNS 4096

/* The header at the start of every 4 KiB sub-block; payload follows. */
struct sub_hdr {
	uint64_t magic;
	uint64_t run;
	uint64_t seq;
	uint64_t pos;		/* byte offset of this sub-block in TARGET */
	uint32_t job;
	uint32_t sub;		/* index of the sub-block in its record */
	uint32_t bs;		/* record size */
	uint32_t crc;		/* CRC32C of the 4 KiB with this field zero */
};

/* ---- CRC32C (Castagnoli), slicing by 8 ---------------------------------------------------------- */

static uint32_t crc_tab[8][256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

static uint32_t crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = ~0u;

	while (n >= 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		w ^= c;
		c = crc_tab[7][w & 0xff] ^ crc_tab[6][(w >> 8) & 0xff] ^ crc_tab[5][(w >> 16) & 0xff] ^
		    crc_tab[4][(w >> 24) & 0xff] ^ crc_tab[3][(w >> 32) & 0xff] ^ crc_tab[2][(w >> 40) & 0xff] ^
		    crc_tab[1][(w >> 48) & 0xff] ^ crc_tab[0][w >> 56];
		p += 8;
		n -= 8;
	}
	while (n--)
		c = crc_tab[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

static uint32_t sub_crc(const uint8_t *blk)
{
	uint8_t tmp[SUB];

	memcpy(tmp, blk, SUB);
	((struct sub_hdr *)tmp)->crc = 0;
	return crc32c(tmp, SUB);
}

/* ---- record layout ---------------------------------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

struct run {
	uint64_t id, seed, base, size;
	uint32_t bs, jobs;
	uint64_t per_job;		/* record slots per job */
	uint64_t acked[MAX_JOBS];	/* highest acknowledged seq per job */
};

/* Byte offset of record @seq of job @job. */
static uint64_t record_pos(const struct run *r, uint32_t job, uint64_t seq)
{
	uint64_t slot = mix(r->seed ^ mix(((uint64_t)job << 48) ^ seq)) % r->per_job;

	return r->base + (slot * r->jobs + job) * r->bs;
}

static void fill_payload(uint8_t *blk, uint64_t run, uint64_t seq, uint64_t pos)
{
	uint64_t x = mix(run ^ mix(seq ^ mix(pos)));

	for (size_t o = sizeof(struct sub_hdr); o < SUB; o += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(blk + o, &x, 8);
	}
}

static void make_record(uint8_t *buf, const struct run *r, uint32_t job, uint64_t seq, uint64_t pos)
{
	for (uint32_t i = 0; i < r->bs / SUB; i++) {
		uint8_t *blk = buf + (size_t)i * SUB;
		struct sub_hdr h = { .magic = MAGIC, .run = r->id, .seq = seq, .pos = pos + (uint64_t)i * SUB,
				     .job = job, .sub = i, .bs = r->bs };

		memcpy(blk, &h, sizeof(h));
		fill_payload(blk, r->id, seq, h.pos);
		((struct sub_hdr *)blk)->crc = crc32c(blk, SUB);
	}
}

/* ---- helpers ---------------------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: fsync-writer write TARGET LOG [-s SIZE] [-o BASE] [-b BS] [-n EVERY] [-j JOBS]\n"
			"                    [-c COUNT] [-t SECONDS] [-S SEED] [-d] [-f]\n"
			"       fsync-writer verify TARGET LOG [-d] [-q]\n");
	exit(2);
}

static uint64_t parse_size(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 0);

	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end || end == s) {
		fprintf(stderr, "fsync-writer: bad size '%s'\n", s);
		exit(2);
	}
	return v;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int sync_dir_of(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd, r;

	if (!dir)
		return -1;
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		strcpy(dir, ".");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd < 0)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

static int log_line(int fd, const char *line)
{
	size_t n = strlen(line);

	if (write(fd, line, n) != (ssize_t)n)
		return -1;
	return fdatasync(fd);
}

/* ---- write -------------------------------------------------------------------------------------- */

struct job_ctx {
	pthread_t tid;
	const struct run *r;
	uint32_t job;
	int fd, log_fd;
	uint64_t every, count;
	bool use_fsync;
	double deadline;
	int status;
	uint64_t written, acked;
};

static void *job_main(void *arg)
{
	struct job_ctx *c = arg;
	const struct run *r = c->r;
	uint8_t *buf;
	char line[128];

	if (posix_memalign((void **)&buf, 4096, r->bs)) {
		c->status = 3;
		return NULL;
	}
	for (uint64_t seq = 1; !c->count || seq <= c->count; seq++) {
		uint64_t pos = record_pos(r, c->job, seq);
		size_t done = 0;
		bool last = (c->count && seq == c->count) || (c->deadline && now() >= c->deadline);

		make_record(buf, r, c->job, seq, pos);
		while (done < r->bs) {
			ssize_t n = pwrite(c->fd, buf + done, r->bs - done, (off_t)(pos + done));

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				fprintf(stderr, "fsync-writer: job %u: write of seq %" PRIu64 " at %" PRIu64 ": %s\n", c->job,
					seq, pos, n < 0 ? strerror(errno) : "short write");
				c->status = 3;
				goto out;
			}
			done += (size_t)n;
		}
		c->written = seq;
		if (seq % c->every == 0 || last) {
			if (c->use_fsync ? fsync(c->fd) : fdatasync(c->fd)) {
				fprintf(stderr, "fsync-writer: job %u: sync after seq %" PRIu64 ": %s\n", c->job, seq,
					strerror(errno));
				c->status = 4;
				goto out;
			}
			snprintf(line, sizeof(line), "ack %016" PRIx64 " %u %" PRIu64 "\n", r->id, c->job, seq);
			if (log_line(c->log_fd, line)) {
				fprintf(stderr, "fsync-writer: log: %s\n", strerror(errno));
				c->status = 5;
				goto out;
			}
			c->acked = seq;
		}
		if (last)
			break;
	}
out:
	free(buf);
	return NULL;
}

static int cmd_write(const char *target, const char *logpath, int argc, char **argv)
{
	struct run r = { .bs = SUB, .jobs = 4 };
	struct job_ctx jobs[MAX_JOBS];
	uint64_t every = 16, count = 0, seed = 0;
	double seconds = 0;
	bool direct = false, use_fsync = false, have_seed = false, have_size = false;
	int opt, fd, log_fd, status = 0, flags;
	struct stat st;
	char line[256];

	while ((opt = getopt(argc, argv, "s:o:b:n:j:c:t:S:df")) != -1) {
		switch (opt) {
		case 's': r.size = parse_size(optarg); have_size = true; break;
		case 'o': r.base = parse_size(optarg); break;
		case 'b': r.bs = (uint32_t)parse_size(optarg); break;
		case 'n': every = strtoull(optarg, NULL, 0); break;
		case 'j': r.jobs = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'c': count = strtoull(optarg, NULL, 0); break;
		case 't': seconds = atof(optarg); break;
		case 'S': seed = strtoull(optarg, NULL, 0); have_seed = true; break;
		case 'd': direct = true; break;
		case 'f': use_fsync = true; break;
		default: usage();
		}
	}
	if (optind != argc || !r.bs || r.bs % SUB || !every || !r.jobs || r.jobs > MAX_JOBS || r.base % SUB)
		usage();
	flags = O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0);
	if (stat(target, &st) == 0 && S_ISBLK(st.st_mode)) {
		uint64_t devsize = 0;

		fd = open(target, flags);
		if (fd < 0 || ioctl(fd, BLKGETSIZE64, &devsize)) {
			fprintf(stderr, "fsync-writer: %s: %s\n", target, strerror(errno));
			return 3;
		}
		if (!have_size)
			r.size = devsize > r.base ? devsize - r.base : 0;
		if (r.base + r.size > devsize) {
			fprintf(stderr, "fsync-writer: %s: region past the end of the device\n", target);
			return 2;
		}
	} else {
		if (!have_size) {
			fprintf(stderr, "fsync-writer: %s: a file target needs -s SIZE\n", target);
			return 2;
		}
		fd = open(target, flags | O_CREAT, 0600);
		if (fd < 0 || fstat(fd, &st)) {
			fprintf(stderr, "fsync-writer: %s: %s\n", target, strerror(errno));
			return 3;
		}
		/* Allocated (reads as zeros) and durable before the run is logged. */
		if ((uint64_t)st.st_size < r.base + r.size && fallocate(fd, 0, 0, (off_t)(r.base + r.size)) &&
		    ftruncate(fd, (off_t)(r.base + r.size))) {
			fprintf(stderr, "fsync-writer: %s: cannot size it: %s\n", target, strerror(errno));
			return 3;
		}
		if (fsync(fd) || sync_dir_of(target)) {
			fprintf(stderr, "fsync-writer: %s: fsync: %s\n", target, strerror(errno));
			return 4;
		}
	}
	r.per_job = r.size / r.bs / r.jobs;
	if (!r.per_job) {
		fprintf(stderr, "fsync-writer: region too small for %u jobs of %u-byte records\n", r.jobs, r.bs);
		return 2;
	}
	if (getrandom(&r.id, sizeof(r.id), 0) != sizeof(r.id))
		r.id = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	r.id |= 1;	/* never 0 */
	if (!have_seed)
		seed = mix(r.id ^ (uint64_t)getpid());
	r.seed = seed;

	log_fd = open(logpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (log_fd < 0) {
		fprintf(stderr, "fsync-writer: %s: %s\n", logpath, strerror(errno));
		return 5;
	}
	snprintf(line, sizeof(line), "run %016" PRIx64 " %016" PRIx64 " %" PRIu64 " %" PRIu64 " %u %u\n", r.id, r.seed,
		 r.base, r.size, r.bs, r.jobs);
	if (log_line(log_fd, line) || sync_dir_of(logpath)) {
		fprintf(stderr, "fsync-writer: %s: %s\n", logpath, strerror(errno));
		return 5;
	}
	printf("run %016" PRIx64 ": %u jobs, %u-byte records, sync every %" PRIu64 ", region %" PRIu64 "+%" PRIu64 "\n",
	       r.id, r.jobs, r.bs, every, r.base, r.size);
	fflush(stdout);
	for (uint32_t j = 0; j < r.jobs; j++) {
		jobs[j] = (struct job_ctx){ .r = &r, .job = j, .fd = fd, .log_fd = log_fd, .every = every,
					    .count = count, .use_fsync = use_fsync,
					    .deadline = seconds > 0 ? now() + seconds : 0 };
		if (pthread_create(&jobs[j].tid, NULL, job_main, &jobs[j])) {
			fprintf(stderr, "fsync-writer: cannot start a thread\n");
			return 3;
		}
	}
	for (uint32_t j = 0; j < r.jobs; j++) {
		pthread_join(jobs[j].tid, NULL);
		if (jobs[j].status && !status)
			status = jobs[j].status;
	}
	{
		uint64_t w = 0, a = 0;

		for (uint32_t j = 0; j < r.jobs; j++) {
			w += jobs[j].written;
			a += jobs[j].acked;
		}
		printf("written %" PRIu64 " records, %" PRIu64 " acknowledged\n", w, a);
	}
	close(fd);
	close(log_fd);
	return status;
}

/* ---- verify ------------------------------------------------------------------------------------- */

static struct run runs[MAX_RUNS];
static int nruns;

static int find_run(uint64_t id)
{
	for (int i = 0; i < nruns; i++)
		if (runs[i].id == id)
			return i;
	return -1;
}

static int read_log(const char *path)
{
	FILE *f = fopen(path, "re");
	char line[512];
	int lineno = 0;

	if (!f) {
		fprintf(stderr, "fsync-writer: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		struct run r = { 0 };
		uint64_t id, seq;
		unsigned job;
		int k;

		lineno++;
		if (!strchr(line, '\n'))
			break;	/* a line the writer did not finish: nothing it acknowledged */
		if (sscanf(line, "run %" SCNx64 " %" SCNx64 " %" SCNu64 " %" SCNu64 " %u %u", &r.id, &r.seed, &r.base,
			   &r.size, &r.bs, &r.jobs) == 6) {
			if (nruns == MAX_RUNS || find_run(r.id) >= 0 || !r.bs || r.bs % SUB || !r.jobs ||
			    r.jobs > MAX_JOBS || !(r.per_job = r.size / r.bs / r.jobs)) {
				fprintf(stderr, "fsync-writer: %s:%d: bad run line\n", path, lineno);
				fclose(f);
				return -1;
			}
			runs[nruns++] = r;
		} else if (sscanf(line, "ack %" SCNx64 " %u %" SCNu64, &id, &job, &seq) == 3) {
			k = find_run(id);
			if (k < 0 || job >= runs[k].jobs) {
				fprintf(stderr, "fsync-writer: %s:%d: ack of an unknown run or job\n", path, lineno);
				fclose(f);
				return -1;
			}
			if (seq > runs[k].acked[job])
				runs[k].acked[job] = seq;
		} else {
			fprintf(stderr, "fsync-writer: %s:%d: unreadable line\n", path, lineno);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	if (!nruns) {
		fprintf(stderr, "fsync-writer: %s: no run logged\n", path);
		return -1;
	}
	return 0;
}

enum verdict { V_OK_EXACT, V_OK_NEWER, V_OK_ZERO, V_OK_UNACKED, V_LOST, V_STALE, V_CORRUPT, V_GARBAGE, V_N };
static const char *const verdict_name[V_N] = { "exact", "newer", "zero", "unacked-record",
					       "LOST",  "STALE", "CORRUPT", "GARBAGE" };

/* Whether @blk is a valid sub-block for byte offset @pos: returns its run index, or -1. */
static int valid_record(const uint8_t *blk, uint64_t pos, const struct sub_hdr **out, const char **why)
{
	const struct sub_hdr *h = (const struct sub_hdr *)blk;
	uint8_t expect[SUB];
	int k;

	*out = h;
	if (h->magic != MAGIC) {
		*why = "no record header";
		return -1;
	}
	if (sub_crc(blk) != h->crc) {
		*why = "checksum mismatch";
		return -1;
	}
	k = find_run(h->run);
	if (k < 0) {
		*why = "record of a run not in the log";
		return -1;
	}
	if (h->pos != pos) {
		*why = "record belongs at another offset";
		return -1;
	}
	if (h->job >= runs[k].jobs || h->bs != runs[k].bs || h->sub >= runs[k].bs / SUB || !h->seq ||
	    record_pos(&runs[k], h->job, h->seq) + (uint64_t)h->sub * SUB != pos) {
		*why = "record placement does not match its sequence number";
		return -1;
	}
	memcpy(expect, blk, sizeof(struct sub_hdr));
	fill_payload(expect, h->run, h->seq, pos);
	if (memcmp(expect + sizeof(struct sub_hdr), blk + sizeof(struct sub_hdr), SUB - sizeof(struct sub_hdr))) {
		*why = "payload mismatch";
		return -1;
	}
	return k;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static int cmd_verify(const char *target, const char *logpath, int argc, char **argv)
{
	uint64_t lo = UINT64_MAX, hi = 0, nblk, count[V_N] = { 0 }, acked_blocks = 0;
	uint16_t *ack_run;	/* 1-based run index of the newest acknowledged record per block; 0 none */
	uint64_t *ack_seq;
	bool direct = false, quiet = false;
	int opt, fd, shown = 0;
	uint8_t *buf;
	const size_t chunk = 1u << 20;

	while ((opt = getopt(argc, argv, "dq")) != -1) {
		switch (opt) {
		case 'd': direct = true; break;
		case 'q': quiet = true; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (read_log(logpath))
		return 5;
	for (int k = 0; k < nruns; k++) {
		if (runs[k].base < lo)
			lo = runs[k].base;
		if (runs[k].base + runs[k].size > hi)
			hi = runs[k].base + runs[k].size;
	}
	nblk = (hi - lo) / SUB;
	ack_run = calloc(nblk, sizeof(*ack_run));
	ack_seq = calloc(nblk, sizeof(*ack_seq));
	if (!ack_run || !ack_seq || posix_memalign((void **)&buf, 4096, chunk)) {
		fprintf(stderr, "fsync-writer: out of memory\n");
		return 6;
	}
	/* Replay every acknowledged record in order: later runs, and later records, win. */
	for (int k = 0; k < nruns; k++) {
		const struct run *r = &runs[k];

		for (uint32_t j = 0; j < r->jobs; j++)
			for (uint64_t seq = 1; seq <= r->acked[j]; seq++) {
				uint64_t pos = record_pos(r, j, seq);

				for (uint32_t i = 0; i < r->bs / SUB; i++) {
					uint64_t b = (pos - lo) / SUB + i;

					ack_run[b] = (uint16_t)(k + 1);
					ack_seq[b] = seq;
				}
			}
	}
	fd = open(target, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
	if (fd < 0) {
		fprintf(stderr, "fsync-writer: %s: %s\n", target, strerror(errno));
		return 6;
	}
	for (uint64_t off = lo; off < hi; off += chunk) {
		size_t want = hi - off < chunk ? (size_t)(hi - off) : chunk, got = 0;

		while (got < want) {
			ssize_t n = pread(fd, buf + got, want - got, (off_t)(off + got));

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				fprintf(stderr, "fsync-writer: %s: read at %" PRIu64 ": %s\n", target, off + got,
					strerror(errno));
				return 6;
			}
			if (n == 0) {
				memset(buf + got, 0, want - got);	/* past the end of a file: zeros */
				break;
			}
			got += (size_t)n;
		}
		for (size_t o = 0; o < want; o += SUB) {
			uint64_t pos = off + o, b = (pos - lo) / SUB;
			const uint8_t *blk = buf + o;
			const struct sub_hdr *h;
			const char *why = "";
			int k = valid_record(blk, pos, &h, &why);
			enum verdict v;

			if (ack_run[b]) {
				int ak = ack_run[b] - 1;

				acked_blocks++;
				if (k >= 0 && (k > ak || (k == ak && h->seq > ack_seq[b])))
					v = V_OK_NEWER;
				else if (k == ak && h->seq == ack_seq[b])
					v = V_OK_EXACT;
				else if (k >= 0)
					v = V_STALE, why = "an older record than the acknowledged one";
				else if (all_zero(blk, SUB))
					v = V_LOST, why = "zeros where an acknowledged record was";
				else
					v = V_CORRUPT;
			} else {
				if (k >= 0)
					v = V_OK_UNACKED;
				else if (all_zero(blk, SUB))
					v = V_OK_ZERO;
				else
					v = V_GARBAGE;
			}
			count[v]++;
			if (v >= V_LOST && !quiet && shown < 20) {
				shown++;
				fprintf(stderr, "fsync-writer: %s at offset %" PRIu64 ": %s", verdict_name[v], pos, why);
				if (ack_run[b])
					fprintf(stderr, "; acknowledged run %016" PRIx64 " seq %" PRIu64,
						runs[ack_run[b] - 1].id, ack_seq[b]);
				if (h->magic == MAGIC)
					fprintf(stderr, "; found run %016" PRIx64 " job %u seq %" PRIu64 " pos %" PRIu64, h->run,
						h->job, h->seq, h->pos);
				fputc('\n', stderr);
			}
		}
	}
	close(fd);
	printf("verify %s: %d run(s), %" PRIu64 " blocks, %" PRIu64 " acknowledged:", target, nruns, nblk, acked_blocks);
	for (int v = 0; v < V_N; v++)
		printf(" %s=%" PRIu64, verdict_name[v], count[v]);
	printf("\n");
	free(buf);
	free(ack_run);
	free(ack_seq);
	return count[V_LOST] || count[V_STALE] || count[V_CORRUPT] || count[V_GARBAGE] ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		usage();
	crc_init();
	if (!strcmp(argv[1], "write"))
		return cmd_write(argv[2], argv[3], argc - 3, argv + 3);
	if (!strcmp(argv[1], "verify"))
		return cmd_verify(argv[2], argv[3], argc - 3, argv + 3);
	usage();
	return 2;
}
