#define _GNU_SOURCE
#include "spectra_system.h"
#include <malloc.h>
#include <sys/socket.h>
#include <sys/timex.h>

int spectra_clock_synchronised(void) {
    struct timex status = {0};  // modes 0: read only
    int state = adjtimex(&status);
    return state != -1 && state != TIME_ERROR && !(status.status & STA_UNSYNC);
}

int spectra_peer_credentials(int fd, unsigned int *uid, int *pid) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    *uid = credentials.uid;
    *pid = credentials.pid;
    return 0;
}

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

int spectra_open_pseudo_terminal(char *path, unsigned long capacity) {
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return -1;
    if (grantpt(master) != 0 || unlockpt(master) != 0 || ptsname_r(master, path, capacity) != 0) {
        close(master);
        return -1;
    }
    return master;
}

void spectra_tune_allocator(void) {
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
}
