#define _GNU_SOURCE
#include "spectra_system.h"
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
