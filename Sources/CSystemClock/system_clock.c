#include "system_clock.h"
#include <sys/timex.h>

int spectra_clock_synchronised(void) {
    struct timex status = {0};  // modes 0: read only
    int state = adjtimex(&status);
    return state != -1 && state != TIME_ERROR && !(status.status & STA_UNSYNC);
}
