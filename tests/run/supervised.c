/* An app that works with a supervisor the way real servers do, compiled static by the
   tests and run inside a busybox root (which has no C library):

   supervised serve FD      accept connections on the listening socket FD (passed by the
                            supervisor) and answer each with one line: the root's
                            /release file, the supervisor's variables, this PID
   supervised notify TEXT   send TEXT as one datagram to $NOTIFY_SOCKET, as sd_notify(3)
                            does ("@name" is an abstract address); print what happened

   Failures print one line on stderr and exit 1 (serve) or 1/3 (notify). */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static const char *variable(const char *name) {
    const char *value = getenv(name);
    return value ? value : "-";
}

static int serve(int listener) {
    char release[64] = "-";
    FILE *file = fopen("/release", "r");
    if (file) {
        if (!fgets(release, sizeof release, file))
            strcpy(release, "-");
        release[strcspn(release, "\n")] = 0;
        fclose(file);
    }
    signal(SIGPIPE, SIG_IGN);  /* a client that went away ends its connection, not us */
    for (;;) {
        int connection = accept(listener, NULL, NULL);
        if (connection < 0) {
            fprintf(stderr, "accept on fd %d: %s\n", listener, strerror(errno));
            return 1;
        }
        dprintf(connection, "release=%s pid=%d SERVER_STARTER_PORT=%s "
                "SERVER_STARTER_GENERATION=%s LISTEN_FDS=%s\n", release, (int)getpid(),
                variable("SERVER_STARTER_PORT"), variable("SERVER_STARTER_GENERATION"),
                variable("LISTEN_FDS"));
        close(connection);
    }
}

static int notify(const char *text) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path) {
        printf("NOTIFY_SOCKET unset\n");
        return 3;
    }
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    size_t length = strlen(path);
    if (length >= sizeof address.sun_path) {
        fprintf(stderr, "NOTIFY_SOCKET too long\n");
        return 1;
    }
    memcpy(address.sun_path, path, length);
    if (path[0] == '@')
        address.sun_path[0] = 0;  /* abstract: no terminating NUL counted */
    else
        length++;
    int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || sendto(sock, text, strlen(text), 0, (struct sockaddr *)&address,
                           offsetof(struct sockaddr_un, sun_path) + length) < 0) {
        fprintf(stderr, "send to NOTIFY_SOCKET=%s: %s\n", path, strerror(errno));
        return 1;
    }
    printf("sent to %s from pid %d\n", path, (int)getpid());
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "serve"))
        return serve(atoi(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "notify"))
        return notify(argv[2]);
    fprintf(stderr, "usage: supervised serve FD | notify TEXT\n");
    return 2;
}
