/*
 * dockyard shim: the parent of one runc container, so the container does not depend on the
 * node agent (the role of conmon / containerd-shim, in a few hundred lines of C).
 *
 * The runtime runs
 *
 *   shim --runc PATH --root DIR --id ID --bundle DIR --pid-file FILE --exit-file FILE
 *        [--runc-log FILE] [--log FILE --log-max-size BYTES --log-max-files N]
 *        [--oom-file FILE] [--tty]
 *
 * The first process forks the long-lived shim and waits for its report:
 *   exit 0, stdout "<container pid> <shim pid>\n"  -- `runc create` succeeded;
 *   exit 1, stderr "<runc's error text>"           -- it failed.
 * The long-lived shim starts a new session (it is reparented away from the runtime), becomes a
 * child subreaper (the container's init is reparented to it when `runc create` exits), runs
 * `runc create` with pipes (or, with --tty, a pty received on a console socket) as the
 * container's stdio, then copies the output into a CRI-format log
 * ("2016-10-06T00:17:09.669794202Z stdout F text") with size-based rotation, reaps the
 * container's init, and writes an exit record atomically (tmp + rename):
 *   {"pid":N,"exit_code":N,"signal":N,"oom_killed":false,"finished_ns":N}
 * then exits. It holds about 100 KB of memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES (16 * 1024) /* longer lines are split into P records (containerd: 16K) */
#define DRAIN_AFTER_EXIT_MS 1000   /* output still open after init exited: give up after this */

static const char *opt_runc, *opt_root, *opt_id, *opt_bundle, *opt_pid_file, *opt_exit_file;
static const char *opt_runc_log, *opt_log, *opt_oom_file;
static long long opt_log_max_size = 10 * 1024 * 1024;
static int opt_log_max_files = 5;
static int opt_tty;

static int log_fd = -1;
static long long log_size;

struct stream {
    const char *name; /* "stdout" | "stderr" */
    int fd;           /* -1 once closed */
    size_t len;
    char buf[LINE_MAX_BYTES];
};

static struct stream out_stream = {"stdout", -1, 0, {0}};
static struct stream err_stream = {"stderr", -1, 0, {0}};
static char record[LINE_MAX_BYTES + 64];

static void die_usage(const char *what) {
    fprintf(stderr, "shim: %s\n", what);
    exit(2);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- the CRI log ---- */

static void log_open(void) {
    struct stat st;
    log_fd = open(opt_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    log_size = (log_fd >= 0 && fstat(log_fd, &st) == 0) ? st.st_size : 0;
}

/* log -> log.1 -> log.2 ... keeping max_files files in all (Kubernetes' containerLogMaxFiles). */
static void log_rotate(void) {
    char from[4096], to[4096];
    close(log_fd);
    if (opt_log_max_files <= 1) {
        if (truncate(opt_log, 0) != 0) { /* nothing better to do */ }
    } else {
        for (int i = opt_log_max_files - 1; i >= 1; i--) {
            if (i == 1)
                snprintf(from, sizeof from, "%s", opt_log);
            else
                snprintf(from, sizeof from, "%s.%d", opt_log, i - 1);
            snprintf(to, sizeof to, "%s.%d", opt_log, i);
            rename(from, to); /* a missing file is fine */
        }
    }
    log_open();
}

static void log_record(const struct stream *s, const char *line, size_t n, char tag) {
    struct timespec ts;
    struct tm tm;
    if (log_fd < 0)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int h = snprintf(record, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ %s %c ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec,
                     s->name, tag);
    memcpy(record + h, line, n);
    record[h + n] = '\n';
    if (write_all(log_fd, record, (size_t)h + n + 1) == 0)
        log_size += h + (long long)n + 1;
    if (opt_log_max_size > 0 && log_size >= opt_log_max_size)
        log_rotate();
}

/* Emit every complete line; a full buffer without a newline becomes a partial (P) record. */
static void stream_flush(struct stream *s, int at_eof) {
    size_t start = 0;
    for (size_t i = 0; i < s->len; i++) {
        if (s->buf[i] == '\n') {
            log_record(s, s->buf + start, i - start, 'F');
            start = i + 1;
        }
    }
    if (start < s->len && (at_eof || (start == 0 && s->len == sizeof s->buf))) {
        log_record(s, s->buf + start, s->len - start, at_eof ? 'F' : 'P');
        start = s->len;
    }
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
}

/* Read what is available; returns 0 at end of stream (EOF, or EIO from a pty whose slave is gone). */
static int stream_read(struct stream *s) {
    ssize_t n = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (n <= 0) {
        stream_flush(s, 1);
        close(s->fd);
        s->fd = -1;
        return 0;
    }
    s->len += (size_t)n;
    stream_flush(s, 0);
    return 1;
}

/* ---- helpers ---- */

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static size_t read_file(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    if (fd < 0)
        return 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    return len;
}

/* "oom_kill N" from memory.oom_control (cgroup v1) or memory.events (v2). */
static int oom_killed(void) {
    char buf[4096];
    if (!opt_oom_file || !read_file(opt_oom_file, buf, sizeof buf))
        return 0;
    for (char *p = buf; (p = strstr(p, "oom_kill")) != NULL; p++) {
        if ((p == buf || p[-1] == '\n') && p[8] == ' ')
            return atoll(p + 9) > 0;
    }
    return 0;
}

/* status < 0: the init vanished without us reaping it, so its exit status is unknown. */
static void write_exit_record(int pid, int status) {
    char tmp[4096], body[320];
    int code = 255, sig = 0;
    if (status < 0) {
        /* code stays 255 */
    } else if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        sig = WTERMSIG(status);
        code = 128 + sig;
    }
    int n = snprintf(body, sizeof body,
                     "{\"pid\":%d,\"exit_code\":%d,\"signal\":%d,\"oom_killed\":%s,"
                     "\"finished_ns\":%lld%s}\n",
                     pid, code, sig, oom_killed() ? "true" : "false", now_ns(),
                     status < 0 ? ",\"message\":\"exit status unknown: the container's "
                                  "init was reaped by another process\"" : "");
    snprintf(tmp, sizeof tmp, "%s.tmp", opt_exit_file);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    write_all(fd, body, (size_t)n);
    close(fd);
    rename(tmp, opt_exit_file);
}

/* Receive the pty master runc sends on the console socket (SCM_RIGHTS). */
static int recv_fd(int sock) {
    char name[4096];
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {name, sizeof name};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) < 0)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

/* Send "O<text>" or "E<text>" to the first process and detach from its pipe. */
static void report(int sync_fd, char kind, const char *text, size_t n) {
    write_all(sync_fd, &kind, 1);
    write_all(sync_fd, text, n);
    close(sync_fd);
}

/* ---- the long-lived shim ---- */

static int run_shim(int sync_fd) {
    sigset_t chld, old;
    int out_pipe[2] = {-1, -1}, err_pipe[2], sock = -1;
    char sock_name[108];
    socklen_t sock_len = 0;

    setsid();
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (chdir("/") != 0) { /* keep going: only avoids pinning a mount */ }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);

    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (pipe2(err_pipe, O_CLOEXEC) != 0 || (!opt_tty && pipe2(out_pipe, O_CLOEXEC) != 0)) {
        const char *m = "shim: cannot create pipes";
        report(sync_fd, 'E', m, strlen(m));
        return 1;
    }
    if (opt_tty) {
        /* An abstract socket: no path length limit, nothing to clean up. runc dials "@name". */
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        int n = snprintf(sock_name, sizeof sock_name, "dyshim/%d/%.80s", getpid(), opt_id);
        memcpy(addr.sun_path + 1, sock_name, (size_t)n);
        sock_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
        sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (sock < 0 || bind(sock, (struct sockaddr *)&addr, sock_len) != 0 ||
            listen(sock, 1) != 0) {
            const char *m = "shim: cannot create the console socket";
            report(sync_fd, 'E', m, strlen(m));
            return 1;
        }
    }

    pid_t runc = fork();
    if (runc == 0) {
        char console_arg[112];
        const char *argv[24];
        int a = 0;
        for (int s = 1; s < NSIG; s++)
            signal(s, SIG_DFL); /* the container must not inherit ignored signals */
        sigprocmask(SIG_SETMASK, &old, NULL);
        dup2(devnull, 0);
        dup2(opt_tty ? err_pipe[1] : out_pipe[1], 1);
        dup2(err_pipe[1], 2);
        argv[a++] = opt_runc;
        argv[a++] = "--root";
        argv[a++] = opt_root;
        if (opt_runc_log) {
            argv[a++] = "--log";
            argv[a++] = opt_runc_log;
            argv[a++] = "--log-format";
            argv[a++] = "json";
        }
        argv[a++] = "create";
        argv[a++] = "--bundle";
        argv[a++] = opt_bundle;
        argv[a++] = "--pid-file";
        argv[a++] = opt_pid_file;
        if (opt_tty) {
            snprintf(console_arg, sizeof console_arg, "@%s", sock_name);
            argv[a++] = "--console-socket";
            argv[a++] = console_arg;
        }
        argv[a++] = opt_id;
        argv[a] = NULL;
        execv(opt_runc, (char *const *)argv);
        dprintf(2, "cannot run %s: %s\n", opt_runc, strerror(errno));
        _exit(127);
    }
    if (out_pipe[1] >= 0)
        close(out_pipe[1]);
    close(err_pipe[1]);

    int st = 0;
    while (runc > 0 && waitpid(runc, &st, 0) < 0 && errno == EINTR) {
    }
    if (runc < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char msg[8192];
        size_t n = 0;
        fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);
        ssize_t r;
        while (n < sizeof msg && (r = read(err_pipe[0], msg + n, sizeof msg - n)) > 0)
            n += (size_t)r;
        if (n == 0)
            n = (size_t)snprintf(msg, sizeof msg, "runc create exited with status %d",
                                 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        report(sync_fd, 'E', msg, n);
        return 1;
    }

    char pidbuf[64];
    read_file(opt_pid_file, pidbuf, sizeof pidbuf);
    pid_t cpid = (pid_t)atoi(pidbuf);
    if (cpid <= 0) {
        const char *m = "runc create wrote no pid file";
        report(sync_fd, 'E', m, strlen(m));
        return 1;
    }

    if (opt_tty) {
        int conn = accept4(sock, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        int master = conn >= 0 ? recv_fd(conn) : -1;
        if (conn >= 0)
            close(conn);
        close(sock);
        if (master < 0) {
            const char *m = "runc did not send the container's terminal";
            kill(cpid, SIGKILL);
            report(sync_fd, 'E', m, strlen(m));
            return 1;
        }
        out_stream.fd = master;
    } else {
        out_stream.fd = out_pipe[0];
    }
    err_stream.fd = err_pipe[0];
    if (opt_log)
        log_open();

    char ok[64];
    int n = snprintf(ok, sizeof ok, "%d %d\n", (int)cpid, (int)getpid());
    report(sync_fd, 'O', ok, (size_t)n);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);

    int exited = 0, status = 0;
    long long deadline = 0;
    for (;;) {
        struct pollfd fds[3] = {{sfd, POLLIN, 0}, {out_stream.fd, POLLIN, 0},
                                {err_stream.fd, POLLIN, 0}};
        if (exited && out_stream.fd < 0 && err_stream.fd < 0)
            break;
        int timeout = -1;
        if (exited) {
            timeout = (int)(deadline - mono_ms());
            if (timeout <= 0)
                break;
        } else if (out_stream.fd < 0 && err_stream.fd < 0) {
            /* Output closed and no exit seen: normally the exit is on its way, but make sure
             * the init still exists (a zombie child of ours does) so we never wait forever. */
            if (kill(cpid, 0) < 0 && errno == ESRCH) {
                exited = 1;
                status = -1;
                continue;
            }
            timeout = 1000;
        }
        if (poll(fds, 3, timeout) < 0 && errno != EINTR)
            break;
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) > 0) {
            }
            pid_t p;
            int s;
            while ((p = waitpid(-1, &s, WNOHANG)) > 0) {
                if (p == cpid && !exited) {
                    exited = 1;
                    status = s;
                    deadline = mono_ms() + DRAIN_AFTER_EXIT_MS;
                }
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR))
            stream_read(&out_stream);
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR))
            stream_read(&err_stream);
    }
    if (out_stream.fd >= 0) {
        stream_flush(&out_stream, 1);
    }
    if (err_stream.fd >= 0) {
        stream_flush(&err_stream, 1);
    }
    write_exit_record((int)cpid, status);
    return 0;
}

/* Descriptors the agent's process leaked into ours (event loops do not all spawn with
 * close_fds) would keep the agent's pipes open for as long as the container runs, so the
 * agent would never see the end of our report: keep only stdin, stdout and stderr. */
static void close_inherited_fds(void) {
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max > 0 ? max : 1024); fd++)
        close((int)fd);
}

int main(int argc, char **argv) {
    close_inherited_fds();
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--tty")) {
            opt_tty = 1;
            continue;
        }
        if (i + 1 >= argc)
            die_usage("missing value");
        const char *v = argv[++i];
        if (!strcmp(k, "--runc")) opt_runc = v;
        else if (!strcmp(k, "--root")) opt_root = v;
        else if (!strcmp(k, "--id")) opt_id = v;
        else if (!strcmp(k, "--bundle")) opt_bundle = v;
        else if (!strcmp(k, "--pid-file")) opt_pid_file = v;
        else if (!strcmp(k, "--exit-file")) opt_exit_file = v;
        else if (!strcmp(k, "--runc-log")) opt_runc_log = v;
        else if (!strcmp(k, "--log")) opt_log = v;
        else if (!strcmp(k, "--log-max-size")) opt_log_max_size = atoll(v);
        else if (!strcmp(k, "--log-max-files")) opt_log_max_files = atoi(v);
        else if (!strcmp(k, "--oom-file")) opt_oom_file = v;
        else die_usage(k);
    }
    if (!opt_runc || !opt_root || !opt_id || !opt_bundle || !opt_pid_file || !opt_exit_file)
        die_usage("--runc, --root, --id, --bundle, --pid-file and --exit-file are required");

    int sync[2];
    if (pipe2(sync, O_CLOEXEC) != 0)
        die_usage("cannot create a pipe");
    pid_t child = fork();
    if (child < 0)
        die_usage("cannot fork");
    if (child == 0) {
        close(sync[0]);
        return run_shim(sync[1]);
    }
    close(sync[1]);

    /* The first process: relay the long-lived shim's report, then exit (it is reparented). */
    static char msg[8193];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof msg - 1 && ((r = read(sync[0], msg + n, sizeof msg - 1 - n)) > 0 ||
                                  (r < 0 && errno == EINTR)))
        if (r > 0)
            n += (size_t)r;
    waitpid(child, NULL, WNOHANG);
    if (n > 0 && msg[0] == 'O') {
        write_all(1, msg + 1, n - 1);
        return 0;
    }
    if (n == 0) {
        const char *m = "the shim exited before reporting";
        write_all(2, m, strlen(m));
    } else {
        write_all(2, msg + 1, n - 1);
    }
    return 1;
}
