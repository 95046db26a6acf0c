/* What one open(2) of a static file costs: open, fstat and close of PATH, N times, in the
 * process this is exec'd as; prints the fastest of 7 passes in nanoseconds per open.
 * Built static by bench/open_cost.py and run chrooted, with none, one or both of droot's
 * layers (seccomp, Landlock) applied before the exec, or a Landlock rule of its own:
 *     open_cost PATH N [RULE_DIR HANDLED_HEX]
 * (RULE_DIR: where the one rule's rights are allowed; HANDLED_HEX: the rights handled,
 * all of them allowed there). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec + now.tv_nsec / 1e9;
}

static int restrict_to(const char *directory, unsigned long long handled)
{
    struct landlock_ruleset_attr ruleset = {.handled_access_fs = handled};
    int ruleset_fd = syscall(SYS_landlock_create_ruleset, &ruleset, sizeof ruleset, 0);
    struct landlock_path_beneath_attr rule = {.allowed_access = handled,
                                              .parent_fd = open(directory, O_PATH)};
    if (ruleset_fd < 0 || rule.parent_fd < 0
        || syscall(SYS_landlock_add_rule, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, &rule, 0)
        || syscall(SYS_landlock_restrict_self, ruleset_fd, 0)) {
        perror("open_cost: Landlock");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: open_cost PATH N [RULE_DIR HANDLED_HEX]\n");
        return 2;
    }
    long count = atol(argv[2]);
    if (argc == 5 && restrict_to(argv[3], strtoull(argv[4], NULL, 16)))
        return 1;
    struct stat info;
    double best = 1e9;
    for (int pass = 0; pass < 7; pass++) {
        double start = seconds();
        for (long i = 0; i < count; i++) {
            int fd = open(argv[1], O_RDONLY | O_NONBLOCK);
            if (fd < 0 || fstat(fd, &info) || close(fd)) {
                perror("open_cost");
                return 1;
            }
        }
        double each = (seconds() - start) / count * 1e9;
        if (each < best)
            best = each;
    }
    printf("%.0f\n", best);
    return 0;
}
