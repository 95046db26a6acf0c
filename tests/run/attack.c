/* Attacks on a droot sandbox, one per subcommand, compiled static by the tests and run
   inside the root. Each prints one line: what happened (ESCAPED/OK/...) or the errno
   text, and exits 0 when the attack worked, 1 when the kernel refused it. Nothing here
   writes to a host file: opens for writing append and write nothing. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/shm.h>
#include <sys/un.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sched.h>
#include <stddef.h>
#include <netinet/in.h>
#include <termios.h>
#include <unistd.h>

static int refused(const char *what) {
    printf("%s: %s\n", what, strerror(errno));
    return 1;
}

static int worked(const char *what) {
    printf("%s\n", what);
    return 0;
}

/* chroot into a subdirectory, walk up with .., chroot . : the classic escape. */
static int chroot_escape(const char *marker) {
    mkdir("/tmp/escape", 0755);
    if (chroot("/tmp/escape") != 0) return refused("chroot");
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") != 0) return refused("chroot .");
    return access(marker, F_OK) == 0 ? worked("ESCAPED") : refused("marker");
}

/* with CAP_SYS_CHROOT: leave the root as above, chroot into the host's `directory` (Landlock
   still confines the process) and run `argv` there: a process of the app rooted elsewhere. */
static int leave_into(const char *directory, char **argv) {
    mkdir("/tmp/escape", 0755);
    if (chroot("/tmp/escape") != 0) return refused("chroot");
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") != 0 || chroot(directory) != 0 || chdir("/") != 0) return refused("chroot");
    execv(argv[0], argv);
    return refused("execv");
}

/* a directory descriptor of the host, inherited through droot: fchdir out of the root. */
static int fchdir_escape(int fd, const char *marker_name) {
    if (fchdir(fd) != 0) return refused("fchdir");
    return access(marker_name, F_OK) == 0 ? worked("ESCAPED") : refused("marker");
}

static int open_for_writing(const char *path) {
    int fd = open(path, O_WRONLY | O_APPEND);
    if (fd < 0) return refused(path);
    close(fd);
    return worked("WRITABLE");
}

/* CVE-2019-5736: hold the executable of a process, kill it, reopen the file to write. */
static int exe_attack(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    int fd = open(path, O_PATH);
    if (fd < 0) return refused(path);
    if (kill(pid, SIGKILL) != 0) return refused("kill");
    for (int i = 0; i < 500; i++) {  /* until its memory (and executable) is released */
        char stat_path[64], state = 0;
        snprintf(stat_path, sizeof stat_path, "/proc/%d/stat", pid);
        FILE *file = fopen(stat_path, "r");
        if (!file) break;
        if (fscanf(file, "%*d %*s %c", &state) != 1) state = 'Z';
        fclose(file);
        if (state == 'Z') break;
        usleep(10000);
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return open_for_writing(path);
}

static int tiocsti(void) {
    char c = ' ';
    if (ioctl(0, TIOCSTI, &c) != 0) return refused("TIOCSTI");
    /* the kernel reads only the low 32 bits of the request */
    if (syscall(SYS_ioctl, 0, (1UL << 32) | TIOCSTI, &c) != 0) return refused("TIOCSTI high");
    return worked("INJECTED");
}

/* "Shocker": open a file of the host by a handle made on the host (type, hex bytes),
   through the root's own directory as the mount reference, and read its first line. */
static int open_handle(int type, const char *hex) {
    struct file_handle *handle = malloc(sizeof *handle + 128);
    size_t length = strlen(hex) / 2;
    handle->handle_type = type;
    handle->handle_bytes = length;
    for (size_t i = 0; i < length; i++) sscanf(hex + 2 * i, "%2hhx", &handle->f_handle[i]);
    int mount_fd = open("/", O_RDONLY | O_DIRECTORY);
    int fd = open_by_handle_at(mount_fd, handle, O_RDONLY);
    if (fd < 0) return refused("open_by_handle_at");
    char line[256] = "";
    ssize_t got = read(fd, line, sizeof line - 1);
    if (got < 0) return refused("read");
    line[strcspn(line, "\n")] = 0;
    return worked(line);
}

/* On the host: the handle of a path, as "type hex" for open-handle. */
static int name_handle(const char *path) {
    struct file_handle *handle = malloc(sizeof *handle + 128);
    int mount_id;
    handle->handle_bytes = 128;
    if (name_to_handle_at(AT_FDCWD, path, handle, &mount_id, 0) != 0)
        return refused("name_to_handle_at");
    printf("%d ", handle->handle_type);
    for (unsigned i = 0; i < handle->handle_bytes; i++) printf("%02x", handle->f_handle[i]);
    printf("\n");
    return 0;
}

/* Become `uid`, then probe whether a signal to `pid` would be delivered (signal 0). */
static int kill_as(uid_t uid, pid_t pid) {
    if (setresuid(uid, uid, uid) != 0) return refused("setuid");
    if (kill(pid, 0) != 0) return refused("kill");
    return worked("SIGNALLED");
}

static int abstract_connect(const char *name) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    strncpy(address.sun_path + 1, name, sizeof address.sun_path - 2);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    socklen_t length = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
    if (connect(fd, (struct sockaddr *)&address, length) != 0) return refused("connect");
    return worked("CONNECTED");
}

static int shm_read(int id) {
    char *memory = shmat(id, NULL, SHM_RDONLY);
    if (memory == (void *)-1) return refused("shmat");
    return worked(memory);
}

/* On the host: a root-only System V segment holding `text`; prints its id. */
static int shm_make(int key, const char *text) {
    int id = shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600);
    if (id < 0) return refused("shmget");
    char *memory = shmat(id, NULL, 0);
    strcpy(memory, text);
    return printf("%d\n", id) < 0;
}

static int keyring_id(const char *which) {
    long spec = !strcmp(which, "session") ? -3 : -4; /* KEY_SPEC_SESSION/USER_KEYRING */
    long id = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, spec, 0);
    if (id < 0) return refused("keyctl");
    return printf("%ld\n", id) < 0;
}

/* A system call the seccomp filter denies, with arguments that make the kernel itself
   answer harmlessly: prints REACHED (and the kernel's answer) unless it was refused. */
static int syscall_probe(const char *name) {
    long result = -1;
    errno = 0;
    if (!strcmp(name, "io_uring_setup")) result = syscall(SYS_io_uring_setup, 0, NULL);
    else if (!strcmp(name, "perf_event_open")) result = syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
    else if (!strcmp(name, "userfaultfd")) result = syscall(SYS_userfaultfd, 1 | 0x40000000);
    else if (!strcmp(name, "bpf")) result = syscall(SYS_bpf, 1000, NULL, 0);
    else if (!strcmp(name, "add_key")) result = syscall(SYS_add_key, NULL, NULL, NULL, 0, 0);
    else if (!strcmp(name, "request_key")) result = syscall(SYS_request_key, NULL, NULL, NULL, 0);
    else if (!strcmp(name, "name_to_handle_at")) {
        struct file_handle *handle = malloc(sizeof *handle + 128);
        int mount_id;
        handle->handle_bytes = 128;
        result = syscall(SYS_name_to_handle_at, AT_FDCWD, "/", handle, &mount_id, 0);
    }
    else if (!strcmp(name, "setns")) result = syscall(SYS_setns, -1, 0);
    else if (!strcmp(name, "unshare")) result = syscall(SYS_unshare, CLONE_FILES);
    else if (!strcmp(name, "clone3")) result = syscall(SYS_clone3, NULL, 0);
    else if (!strcmp(name, "clone-newuser")) {
        result = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);
        if (result == 0) _exit(0);
        if (result > 0) waitpid(result, NULL, 0);
    }
    else { fprintf(stderr, "unknown call %s\n", name); return 2; }
    if (result < 0 && errno == EPERM) return refused(name);
    if (result < 0 && errno == ENOSYS && !strcmp(name, "clone3")) return refused(name);
    printf("REACHED %s\n", result < 0 ? strerror(errno) : "ok");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "chroot-escape") && argc == 3) return chroot_escape(argv[2]);
    if (!strcmp(what, "leave-into") && argc >= 4) return leave_into(argv[2], argv + 3);
    if (!strcmp(what, "fchdir-escape") && argc == 4) return fchdir_escape(atoi(argv[2]), argv[3]);
    if (!strcmp(what, "open-write") && argc == 3) return open_for_writing(argv[2]);
    if (!strcmp(what, "exe-attack") && argc == 3) return exe_attack(atoi(argv[2]));
    if (!strcmp(what, "tiocsti")) return tiocsti();
    if (!strcmp(what, "mknod-block") && argc == 5) {
        if (mknod(argv[2], S_IFBLK | 0600, makedev(atoi(argv[3]), atoi(argv[4]))) != 0)
            return refused("mknod");
        return worked("CREATED");
    }
    if (!strcmp(what, "mount-tmpfs") && argc == 3) {
        if (mount("none", argv[2], "tmpfs", 0, NULL) != 0) return refused("mount");
        return worked("MOUNTED");
    }
    if (!strcmp(what, "remount-rw") && argc == 3) {
        if (mount("none", argv[2], NULL, MS_REMOUNT | MS_BIND, NULL) != 0) return refused("remount");
        return worked("REMOUNTED");
    }
    if (!strcmp(what, "raw-socket")) {
        if (socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) < 0) return refused("socket");
        return worked("RAW");
    }
    if (!strcmp(what, "load-module")) {
        /* EBADF means the capability check passed and only the (absent) module failed */
        if (syscall(SYS_finit_module, -1, "", 0) != 0 && errno != EBADF) return refused("finit_module");
        return worked("PERMITTED");
    }
    if (!strcmp(what, "ptrace") && argc == 3) {
        pid_t pid = atoi(argv[2]);
        if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) != 0) return refused("ptrace");
        waitpid(pid, NULL, __WALL);
        ptrace(PTRACE_DETACH, pid, NULL, NULL);
        return worked("ATTACHED");
    }
    if (!strcmp(what, "fds")) {  /* the open descriptors, but the one reading the list */
        DIR *dir = opendir("/proc/self/fd");
        if (!dir) return refused("opendir");
        for (struct dirent *entry; (entry = readdir(dir));)
            if (entry->d_name[0] != '.' && atoi(entry->d_name) != dirfd(dir))
                printf("%s ", entry->d_name);
        printf("\n");
        return 0;
    }
    if (!strcmp(what, "euid")) return printf("euid=%d\n", geteuid()) < 0;
    if (!strcmp(what, "open-handle") && argc == 4) return open_handle(atoi(argv[2]), argv[3]);
    if (!strcmp(what, "name-handle") && argc == 3) return name_handle(argv[2]);
    if (!strcmp(what, "kill-as") && argc == 4) return kill_as(atoi(argv[2]), atoi(argv[3]));
    if (!strcmp(what, "abstract-connect") && argc == 3) return abstract_connect(argv[2]);
    if (!strcmp(what, "shm-read") && argc == 3) return shm_read(atoi(argv[2]));
    if (!strcmp(what, "shm-make") && argc == 4) return shm_make(atoi(argv[2]), argv[3]);
    if (!strcmp(what, "keyring-id") && argc == 3) return keyring_id(argv[2]);
    if (!strcmp(what, "syscall-probe") && argc == 3) return syscall_probe(argv[2]);
    fprintf(stderr, "usage: attack chroot-escape|leave-into|fchdir-escape|open-write|exe-attack|tiocsti|"
                    "mknod-block|mount-tmpfs|remount-rw|raw-socket|load-module|ptrace|fds|euid|"
                    "open-handle|name-handle|kill-as|abstract-connect|shm-read|shm-make|"
                    "keyring-id|syscall-probe ...\n");
    return 2;
}
