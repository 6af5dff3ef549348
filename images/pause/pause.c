/*
 * kfs pause: the process that holds a pod sandbox's namespaces open.
 *
 * Written here rather than pulled because this project builds every image
 * offline. It must stay tiny and static: it runs in an otherwise empty image.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The kubelet stops a sandbox with SIGTERM; exiting 0 keeps that a clean stop. */
static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

/* With a shared PID namespace we are PID 1 and inherit every orphan; without
 * reaping they would pile up as zombies for the life of the pod. */
static void on_child(int sig) {
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

int main(int argc, char **argv) {
    struct sigaction sa;

    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("kfs-pause 1");
        return 0;
    }
    if (getpid() != 1) {
        fputs("warning: pause should be the first process\n", stderr);
    }
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
        return 1;
    }
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) < 0) {
        return 2;
    }
    for (;;) {
        pause();
    }
}
