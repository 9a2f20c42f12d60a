#include "spectra_sqlite.h"

#include <pthread.h>
#include <sqlite3.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int applied = 0;

static void configure(void) {
    // SQLITE_MISUSE when SQLite is already initialised: the defaults then stay.
    applied = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK;
}

int spectra_sqlite_configure(void) {
    pthread_once(&once, configure);
    return applied;
}
