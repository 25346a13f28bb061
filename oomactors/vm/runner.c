/* oomactors workload runner: runs a config's tasks inside the guest (or natively, for tests).
 *
 * Usage: runner PROGRAM-FILE [EVENTS-FILE]
 *
 * The program file is written by oomactors/vm/program.py, one directive per line:
 *   run duration_ms=N idle_stop=0|1
 *   update at_ms=N path=/sys/fs/cgroup/x mems=0,1
 *   task name=C count=N uid=N caps=HEX adj=N nice=N start_ms=N stagger_ms=N threads=N
 *        cgroup=PATH|- mpol=MODE nodes=MASK rss=BYTES nsteps=K
 *   followed by K step lines (nested bodies counted in K):
 *   alloc kind=anon|shmem size=B chunk=PAGES rate=B/s on_fail=exit|retry|continue
 *   touch_file size=B dirty=0|1 mapped=0|1 rate=B/s
 *   free size=B|all      sleep ns=N      compute ns=N     adj value=N     exit code=N
 *   fork comm=C clone_vm=0|1 on_fail=... body=K     repeat times=N(0: forever) body=K
 *
 * Events, one line each, "@<CLOCK_MONOTONIC ns> <pid> <what> key=value...", go to
 * EVENTS-FILE (a serial port in the guest) or stdout.  The supervisor (this process) makes
 * itself the subreaper of every task, so it reports each exit and each death by signal.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXSTEPS 4096
#define MAXTASKS 256
#define MAXUPD 64
#define PAGE 4096L

enum op { ALLOC, TOUCH, FREE, SLEEP, COMPUTE, ADJ, EXIT, FORK, REPEAT };
enum fail { F_EXIT, F_RETRY, F_CONT };

struct step {
	enum op op;
	int shmem, dirty, mapped, clone_vm, on_fail, all;
	long long size, chunk, rate, ns, value, times, body;
	char comm[16];
};

struct task {
	char name[16], cgroup[256];
	long long count, uid, adj, nice, start_ms, stagger_ms, threads, rss, nsteps, first;
	unsigned long long caps, nodes;
	int mpol;
};

struct update {
	long long at_ms;
	char path[256], mems[64];
	int done;
};

static struct step steps[MAXSTEPS];
static int nsteps;
static struct task tasks[MAXTASKS];
static int ntasks;
static struct update updates[MAXUPD];
static int nupdates;
static long long duration_ms = 10000;
static int idle_stop = 1;
static int evfd = 1;
static const char *blockdev = "/dev/vdb";
static long long file_off;

/* the anonymous regions of this process, freed from the newest (free size=...) */
struct region { char *addr; long long len; };
static struct region regions[4096];
static int nregions;

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void event(const char *fmt, ...)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "@%lld %d ", now_ns(), (int)getpid());
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	/* one write per line: lines of different processes never interleave */
	while (write(evfd, buf, n) < 0 && errno == EINTR)
		;
}

static void die(const char *what)
{
	event("error what=%s errno=%d", what, errno);
	_exit(111);
}

static void sleep_ns(long long ns)
{
	struct timespec ts = { ns / 1000000000LL, ns % 1000000000LL };
	while (ns > 0 && clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

static void sleep_until(long long t)
{
	long long d = t - now_ns();
	if (d > 0)
		sleep_ns(d);
}

/* --- parsing ------------------------------------------------------------------------ */

static const char *val(const char *line, const char *key)
{
	size_t k = strlen(key);
	for (const char *p = line; (p = strstr(p, key)); p++)
		if ((p == line || p[-1] == ' ') && p[k] == '=')
			return p + k + 1;
	return NULL;
}

static long long num(const char *line, const char *key, long long dflt)
{
	const char *v = val(line, key);
	return v ? strtoll(v, NULL, 0) : dflt;
}

static void word(const char *line, const char *key, char *out, size_t size)
{
	const char *v = val(line, key);
	size_t n = 0;
	if (v)
		while (v[n] && v[n] != ' ' && v[n] != '\n' && n < size - 1)
			n++;
	memcpy(out, v ? v : "", n);
	out[n] = 0;
}

static int fail_mode(const char *line)
{
	char w[16];
	word(line, "on_fail", w, sizeof w);
	return !strcmp(w, "retry") ? F_RETRY : !strcmp(w, "continue") ? F_CONT : F_EXIT;
}

static void parse(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[1024], w[32];
	if (!f) {
		fprintf(stderr, "runner: cannot open %s\n", path);
		exit(2);
	}
	while (fgets(line, sizeof line, f)) {
		char op[16] = "";
		sscanf(line, "%15s", op);
		if (!op[0] || op[0] == '#')
			continue;
		if (!strcmp(op, "run")) {
			duration_ms = num(line, "duration_ms", duration_ms);
			idle_stop = num(line, "idle_stop", 1);
			continue;
		}
		if (!strcmp(op, "update")) {
			struct update *u = &updates[nupdates++];
			u->at_ms = num(line, "at_ms", 0);
			word(line, "path", u->path, sizeof u->path);
			word(line, "mems", u->mems, sizeof u->mems);
			continue;
		}
		if (!strcmp(op, "task")) {
			struct task *t = &tasks[ntasks++];
			word(line, "name", t->name, sizeof t->name);
			word(line, "cgroup", t->cgroup, sizeof t->cgroup);
			t->count = num(line, "count", 1);
			t->uid = num(line, "uid", 0);
			t->caps = strtoull(val(line, "caps") ? val(line, "caps") : "0", NULL, 16);
			t->adj = num(line, "adj", 0);
			t->nice = num(line, "nice", 0);
			t->start_ms = num(line, "start_ms", 0);
			t->stagger_ms = num(line, "stagger_ms", 0);
			t->threads = num(line, "threads", 1);
			t->rss = num(line, "rss", 0);
			t->nsteps = num(line, "nsteps", 0);
			t->nodes = strtoull(val(line, "nodes") ? val(line, "nodes") : "0", NULL, 0);
			word(line, "mpol", w, sizeof w);
			t->mpol = !strcmp(w, "preferred") ? 1 : !strcmp(w, "bind") ? 2 : !strcmp(w, "interleave") ? 3 : 0;
			t->first = nsteps;
			if (ntasks == MAXTASKS)
				break;
			continue;
		}
		if (nsteps == MAXSTEPS) {
			fprintf(stderr, "runner: too many steps\n");
			exit(2);
		}
		struct step *s = &steps[nsteps++];
		memset(s, 0, sizeof *s);
		s->on_fail = fail_mode(line);
		s->size = num(line, "size", 0);
		s->rate = num(line, "rate", 0);
		s->ns = num(line, "ns", 0);
		s->body = num(line, "body", 0);
		word(line, "size", w, sizeof w);
		s->all = !strcmp(w, "all");
		if (!strcmp(op, "alloc")) {
			s->op = ALLOC;
			word(line, "kind", w, sizeof w);
			s->shmem = !strcmp(w, "shmem");
			s->chunk = num(line, "chunk", 32);
		} else if (!strcmp(op, "touch_file")) {
			s->op = TOUCH;
			s->dirty = num(line, "dirty", 0);
			s->mapped = num(line, "mapped", 1);
		} else if (!strcmp(op, "free")) {
			s->op = FREE;
		} else if (!strcmp(op, "sleep")) {
			s->op = SLEEP;
		} else if (!strcmp(op, "compute")) {
			s->op = COMPUTE;
		} else if (!strcmp(op, "adj")) {
			s->op = ADJ;
			s->value = num(line, "value", 0);
		} else if (!strcmp(op, "exit")) {
			s->op = EXIT;
			s->value = num(line, "code", 0);
		} else if (!strcmp(op, "fork")) {
			s->op = FORK;
			word(line, "comm", s->comm, sizeof s->comm);
			s->clone_vm = num(line, "clone_vm", 0);
		} else if (!strcmp(op, "repeat")) {
			s->op = REPEAT;
			s->times = num(line, "times", 0);
		} else {
			fprintf(stderr, "runner: unknown step %s\n", op);
			exit(2);
		}
	}
	fclose(f);
}

/* --- steps ---------------------------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, text, strlen(text)) < 0) {
		event("error what=write path=%s errno=%d", path, errno);
		_exit(111);
	}
	close(fd);
}

static void set_adj(long long v)
{
	char b[32];
	snprintf(b, sizeof b, "%lld", v);
	write_file("/proc/self/oom_score_adj", b);
}

/* -ENOMEM reached the program: 1 = give the step up, 0 = try again; exit ends the task */
static int enomem(const char *what, int mode)
{
	event("enomem op=%s", what);
	if (mode == F_EXIT)
		_exit(1);
	if (mode == F_CONT)
		return 1;
	sleep_ns(10000000);
	return 0;
}

static void pace(long long start, long long done, long long rate)
{
	if (rate > 0)
		sleep_until(start + done * 1000000000LL / rate);
}

static void touch(char *p, long long len, long long chunk, long long rate)
{
	long long start = now_ns();
	for (long long off = 0; off < len;) {
		long long end = off + chunk * PAGE;
		if (end > len)
			end = len;
		for (; off < end; off += PAGE)
			p[off] = 1;
		pace(start, off, rate);
	}
}

static void do_alloc(struct step *s)
{
	char *p;
	int fd = -1;
	for (;;) {
		if (s->shmem) {
			fd = memfd_create("oomactors", 0);
			if (fd >= 0 && ftruncate(fd, s->size) == 0)
				p = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			else
				p = MAP_FAILED;
		} else {
			p = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		}
		if (p != MAP_FAILED)
			break;
		if (fd >= 0)
			close(fd);
		if (enomem("alloc", s->on_fail))
			return;
	}
	if (!s->shmem && nregions < (int)(sizeof regions / sizeof regions[0]))
		regions[nregions++] = (struct region){ p, s->size };
	touch(p, s->size, s->chunk, s->rate);
	/* a shmem region stays: the memfd keeps the pages after the mapping is gone */
}

static void do_free(struct step *s)
{
	long long want = s->all ? -1 : s->size;
	while (nregions && want != 0) {
		struct region *r = &regions[nregions - 1];
		long long k = (want < 0 || want >= r->len) ? r->len : want;
		munmap(r->addr + r->len - k, k);
		r->len -= k;
		if (want > 0)
			want -= k;
		if (!r->len)
			nregions--;
	}
}

static void do_touch_file(struct step *s)
{
	int fd = open(blockdev, s->dirty ? O_RDWR : O_RDONLY);
	off_t size;
	if (fd < 0)
		die("open-blockdev");
	size = lseek(fd, 0, SEEK_END);
	if (size <= 0)
		die("blockdev-size");
	if (file_off + s->size > size)
		file_off = 0;
	if (s->mapped && !s->dirty) {
		char *p = mmap(NULL, s->size, PROT_READ, MAP_SHARED, fd, file_off);
		volatile char sink;
		long long start = now_ns();
		if (p == MAP_FAILED)
			die("mmap-blockdev");
		for (long long off = 0; off < s->size; off += PAGE) {
			sink = p[off];
			if ((off / PAGE) % 32 == 31)
				pace(start, off + PAGE, s->rate);
		}
		(void)sink;
	} else {
		static char buf[32 * PAGE];
		long long start = now_ns();
		lseek(fd, file_off, SEEK_SET);
		memset(buf, 0x5a, sizeof buf);
		for (long long done = 0; done < s->size;) {
			long long n = s->size - done < (long long)sizeof buf ? s->size - done : (long long)sizeof buf;
			if ((s->dirty ? write(fd, buf, n) : read(fd, buf, n)) <= 0)
				die("io-blockdev");
			done += n;
			pace(start, done, s->rate);
		}
	}
	file_off += s->size;
	close(fd);
}

static void run_steps(int first, int n);

struct child_args { int first, n; char comm[16]; };

static int clone_child(void *arg)
{
	struct child_args *a = arg;
	prctl(PR_SET_NAME, a->comm);
	run_steps(a->first, a->n);
	_exit(0);
}

static void do_fork(struct step *s, int first)
{
	for (;;) {
		pid_t pid;
		if (s->clone_vm) {
			static struct child_args a;
			size_t stack = 256 * 1024;
			char *st = mmap(NULL, stack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			a = (struct child_args){ first, (int)s->body, "" };
			memcpy(a.comm, s->comm, sizeof a.comm);
			pid = st == MAP_FAILED ? -1 : clone(clone_child, st + stack, CLONE_VM | SIGCHLD, &a);
		} else {
			pid = fork();
			if (pid == 0) {
				nregions = 0; /* the parent's regions stay the parent's to free */
				if (s->comm[0])
					prctl(PR_SET_NAME, s->comm);
				event("forked comm=%s", s->comm);
				run_steps(first, (int)s->body);
				_exit(0);
			}
		}
		if (pid > 0) {
			event("fork child=%d comm=%s", (int)pid, s->comm);
			return;
		}
		if (enomem("fork", s->on_fail))
			return;
	}
}

static void busy(long long ns)
{
	long long end = now_ns() + ns;
	while (now_ns() < end)
		;
}

/* run steps[first .. first+n) (nested bodies are skipped over by their length) */
static void run_steps(int first, int n)
{
	for (int i = first; i < first + n; i++) {
		struct step *s = &steps[i];
		switch (s->op) {
		case ALLOC: do_alloc(s); break;
		case TOUCH: do_touch_file(s); break;
		case FREE: do_free(s); break;
		case SLEEP: sleep_ns(s->ns); break;
		case COMPUTE: busy(s->ns); break;
		case ADJ: set_adj(s->value); break;
		case EXIT: event("exit code=%lld", s->value); _exit((int)s->value);
		case FORK: do_fork(s, i + 1); i += s->body; break;
		case REPEAT:
			for (long long k = 0; s->times == 0 || k < s->times; k++)
				run_steps(i + 1, (int)s->body);
			i += s->body;
			break;
		}
	}
}

/* --- task set-up ---------------------------------------------------------------------- */

struct cap_header { uint32_t version; int pid; };
struct cap_data { uint32_t effective, permitted, inheritable; };

static void *parked(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static void start_task(struct task *t, int index)
{
	char b[300];
	event("task name=%s index=%d", t->name, index); /* first: a set-up error names the task */
	if (t->cgroup[0] && strcmp(t->cgroup, "-")) {
		snprintf(b, sizeof b, "%s/cgroup.procs", t->cgroup);
		write_file(b, "0");
	}
	if (t->mpol) {
		unsigned long mask = t->nodes;
		if (syscall(SYS_set_mempolicy, t->mpol, mask ? &mask : NULL, mask ? 64 : 0) < 0)
			die("set_mempolicy");
	}
	set_adj(t->adj);
	if (setpriority(PRIO_PROCESS, 0, (int)t->nice) < 0)
		die("setpriority");
	prctl(PR_SET_NAME, t->name);
	if (t->uid != 0) {
		struct cap_header h = { 0x20080522, 0 }; /* _LINUX_CAPABILITY_VERSION_3 */
		struct cap_data d[2] = { { 0 } };
		prctl(PR_SET_KEEPCAPS, 1);
		if (setresgid(t->uid, t->uid, t->uid) < 0 || setresuid(t->uid, t->uid, t->uid) < 0)
			die("setresuid");
		d[0].effective = d[0].permitted = (uint32_t)t->caps;
		d[1].effective = d[1].permitted = (uint32_t)(t->caps >> 32);
		if (syscall(SYS_capset, &h, d) < 0)
			die("capset");
	}
	for (long long i = 1; i < t->threads; i++) {
		pthread_t th;
		pthread_create(&th, NULL, parked, NULL);
	}
	if (t->rss > 0) {
		struct step s = { .op = ALLOC, .size = t->rss, .chunk = 512, .on_fail = F_EXIT };
		do_alloc(&s);
	}
	event("ready name=%s", t->name);
	run_steps((int)t->first, (int)t->nsteps);
	_exit(0);
}

/* --- the supervisor ------------------------------------------------------------------- */

struct start { long long at_ms; int task, index; };

static int by_time(const void *a, const void *b)
{
	const struct start *x = a, *y = b;
	if (x->at_ms != y->at_ms)
		return x->at_ms < y->at_ms ? -1 : 1;
	if (x->task != y->task)
		return x->task - y->task;
	return x->index - y->index;
}

static int reap(void)
{
	int status, n = 0;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG | __WALL)) > 0) {
		n++;
		if (WIFSIGNALED(status))
			event("died pid=%d signal=%d", (int)pid, WTERMSIG(status));
		else
			event("exited pid=%d code=%d", (int)pid, WEXITSTATUS(status));
	}
	return pid < 0 && errno == ECHILD ? -1 : n;
}

int main(int argc, char **argv)
{
	static struct start starts[100000];
	int nstarts = 0;
	long long t0;
	if (argc < 2) {
		fprintf(stderr, "usage: runner PROGRAM [EVENTS]\n");
		return 2;
	}
	if (argc > 2 && (evfd = open(argv[2], O_WRONLY | O_NOCTTY | O_APPEND | O_CREAT, 0644)) < 0) {
		perror(argv[2]);
		return 2;
	}
	if (getenv("OOMACTORS_BLOCKDEV"))
		blockdev = getenv("OOMACTORS_BLOCKDEV");
	parse(argv[1]);
	for (int i = 0; i < ntasks; i++)
		for (int k = 0; k < tasks[i].count && nstarts < 100000; k++)
			starts[nstarts++] = (struct start){ tasks[i].start_ms + k * tasks[i].stagger_ms, i, k };
	qsort(starts, nstarts, sizeof starts[0], by_time);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	prctl(PR_SET_NAME, "oomactors-run");
	{ /* the supervisor is not part of the workload (best effort: natively it may not be allowed) */
		int fd = open("/proc/self/oom_score_adj", O_WRONLY);
		if (fd >= 0 && write(fd, "-1000", 5) < 0)
			event("note what=supervisor-adj errno=%d", errno);
		if (fd >= 0)
			close(fd);
	}
	t0 = now_ns();
	event("start tasks=%d duration_ms=%lld", nstarts, duration_ms);
	int next = 0;
	for (;;) {
		long long ms = (now_ns() - t0) / 1000000;
		while (next < nstarts && starts[next].at_ms <= ms) {
			struct start *st = &starts[next++];
			pid_t pid = fork();
			if (pid == 0)
				start_task(&tasks[st->task], st->index);
			if (pid < 0)
				event("spawn-failed name=%s errno=%d", tasks[st->task].name, errno);
		}
		for (int u = 0; u < nupdates; u++)
			if (!updates[u].done && updates[u].at_ms <= ms) {
				char b[300];
				updates[u].done = 1;
				snprintf(b, sizeof b, "%s/cpuset.mems", updates[u].path);
				write_file(b, updates[u].mems);
				event("cpuset-update path=%s mems=%s", updates[u].path, updates[u].mems);
			}
		int r = reap();
		if (ms >= duration_ms) {
			event("end reason=duration");
			break;
		}
		if (r < 0 && next == nstarts && idle_stop) {
			event("end reason=idle");
			break;
		}
		sleep_ns(2000000);
	}
	return 0;
}
