/* The app of the restart tests: an HTTP server on the listening socket a socket-passing
 * supervisor hands it (Server::Starter's SERVER_STARTER_PORT, "[HOST:]PORT=FD"), as a
 * release of a real app would run under `droot run --preserve-fds 1`.
 *
 * It answers every request with the release's /body (read once at start, so a reply says
 * which release the process came from) and the status in /status (default 200), one
 * request per connection. SIGTERM, which the supervisor sends to the old worker once the
 * new one runs, stops it between two connections: a connection it accepted is answered. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

static volatile sig_atomic_t stopping;

static void stop(int signum) { (void)signum; stopping = 1; }

static size_t read_file(const char *path, char *buffer, size_t size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t got = read(fd, buffer, size - 1);
    close(fd);
    return got > 0 ? (size_t)got : 0;
}

static void write_all(int fd, const char *data, size_t length) {
    while (length > 0) {
        ssize_t done = write(fd, data, length);
        if (done <= 0) return;
        data += done;
        length -= (size_t)done;
    }
}

int main(void) {
    const char *ports = getenv("SERVER_STARTER_PORT");
    const char *equals = ports ? strchr(ports, '=') : NULL;
    if (!equals) {
        fprintf(stderr, "app_server: no SERVER_STARTER_PORT (PORT=FD) in the environment\n");
        return 2;
    }
    int listener = atoi(equals + 1);

    char body[4096] = "", status_text[16] = "";
    size_t body_length = read_file("/body", body, sizeof body);
    int status = read_file("/status", status_text, sizeof status_text) ? atoi(status_text) : 200;

    struct sigaction action = {0};
    action.sa_handler = stop;  /* no SA_RESTART: accept() returns EINTR */
    sigaction(SIGTERM, &action, NULL);
    signal(SIGPIPE, SIG_IGN);

    while (!stopping) {
        int connection = accept(listener, NULL, NULL);
        if (connection < 0) {
            if (errno == EINTR) continue;
            perror("app_server: accept");
            return 1;
        }
        char request[8192];
        size_t have = 0;
        while (have < sizeof request - 1) {  /* up to the end of the headers */
            ssize_t got = read(connection, request + have, sizeof request - 1 - have);
            if (got <= 0) break;
            have += (size_t)got;
            request[have] = 0;
            if (strstr(request, "\r\n\r\n")) break;
        }
        char head[256];
        int head_length = snprintf(head, sizeof head,
                                   "HTTP/1.0 %d %s\r\nContent-Length: %zu\r\n"
                                   "Connection: close\r\n\r\n",
                                   status, status == 200 ? "OK" : "Failing", body_length);
        write_all(connection, head, (size_t)head_length);
        write_all(connection, body, body_length);
        close(connection);
    }
    return 0;
}
