/*
 * relay_floor: the least CPU any user-space proxy can spend per message on this machine.
 *
 * A single-threaded epoll relay that copies bytes between each client and its own server
 * connection and does nothing else: no parsing, no pooling, no auth (Postgres's trust auth
 * passes through), one read and one write per message per direction. Its CPU per 1000
 * transactions is the floor that a proxy's kernel work sets (the socket reads, writes and
 * epoll waits every proxy does); what a real proxy spends above it is its own work.
 *
 * benches/pgbench_compare.sh builds and runs it as target "floor".
 * Usage: relay_floor LISTEN_PORT UPSTREAM_PORT   (both on 127.0.0.1)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 16384
#define EVENTS 256

struct pair;

/* One socket of a pair: epoll's data pointer. */
struct end {
    struct pair *pair;
    int idx;
};

/* A client and its server connection. buf[i] holds bytes read from fd[i] that fd[1 - i] has
 * not taken yet (only after a short write). */
struct pair {
    int fd[2];
    struct end end[2];
    char buf[2][BUF];
    size_t off[2], len[2];
    int dead;
    struct pair *next_dead;
};

static int epfd;
static struct pair *dead_list;
static struct sockaddr_in upstream;

static void watch(struct pair *p, int i, int op) {
    struct epoll_event ev = {0};
    /* Read while nothing of ours waits to go out; write while the other side's bytes wait. */
    if (p->len[i] == 0) ev.events |= EPOLLIN;
    if (p->len[1 - i] > 0) ev.events |= EPOLLOUT;
    ev.data.ptr = &p->end[i];
    epoll_ctl(epfd, op, p->fd[i], &ev);
}

static void kill_pair(struct pair *p) {
    if (p->dead) return;
    p->dead = 1;
    close(p->fd[0]);
    close(p->fd[1]);
    p->next_dead = dead_list;
    dead_list = p;
}

/* Writes what fd[i] sent to fd[1 - i]; returns 0 when the pair died. */
static int flush(struct pair *p, int i) {
    while (p->len[i] > 0) {
        ssize_t n = send(p->fd[1 - i], p->buf[i] + p->off[i], p->len[i], MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) break;
        if (n <= 0) {
            kill_pair(p);
            return 0;
        }
        p->off[i] += (size_t)n;
        p->len[i] -= (size_t)n;
    }
    if (p->len[i] == 0) p->off[i] = 0;
    return 1;
}

static void on_readable(struct pair *p, int i) {
    ssize_t n = recv(p->fd[i], p->buf[i], BUF, 0);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
        kill_pair(p);
        return;
    }
    p->off[i] = 0;
    p->len[i] = (size_t)n;
    if (!flush(p, i)) return;
    if (p->len[i] > 0) { /* short write: stop reading, wait until the other side drains */
        watch(p, i, EPOLL_CTL_MOD);
        watch(p, 1 - i, EPOLL_CTL_MOD);
    }
}

static void on_writable(struct pair *p, int j) {
    if (!flush(p, 1 - j)) return;
    if (p->len[1 - j] == 0) {
        watch(p, j, EPOLL_CTL_MOD);
        watch(p, 1 - j, EPOLL_CTL_MOD);
    }
}

static void on_accept(int listener) {
    for (;;) {
        int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
        if (client < 0) return;
        int server = socket(AF_INET, SOCK_STREAM, 0);
        if (server < 0 || connect(server, (struct sockaddr *)&upstream, sizeof upstream) < 0) {
            perror("relay_floor: connect upstream");
            close(client);
            if (server >= 0) close(server);
            continue;
        }
        int one = 1;
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fcntl(server, F_SETFL, O_NONBLOCK) < 0) {
            close(client);
            close(server);
            continue;
        }
        struct pair *p = calloc(1, sizeof *p);
        if (!p) {
            close(client);
            close(server);
            continue;
        }
        p->fd[0] = client;
        p->fd[1] = server;
        for (int i = 0; i < 2; i++) {
            p->end[i].pair = p;
            p->end[i].idx = i;
            watch(p, i, EPOLL_CTL_ADD);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    upstream = addr;
    upstream.sin_port = htons(atoi(argv[2]));
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 4096) < 0) {
        perror("relay_floor: listen");
        return 1;
    }
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event events[EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, EVENTS, -1);
        for (int k = 0; k < n; k++) {
            struct end *e = events[k].data.ptr;
            if (!e) {
                on_accept(listener);
                continue;
            }
            struct pair *p = e->pair;
            if (p->dead) continue;
            if (events[k].events & (EPOLLERR | EPOLLHUP)) {
                kill_pair(p);
                continue;
            }
            if (events[k].events & EPOLLOUT) on_writable(p, e->idx);
            if (!p->dead && (events[k].events & EPOLLIN)) on_readable(p, e->idx);
        }
        while (dead_list) {
            struct pair *p = dead_list;
            dead_list = p->next_dead;
            free(p);
        }
    }
}
