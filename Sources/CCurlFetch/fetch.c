#define CURL_DISABLE_TYPECHECK 1
#define CURL_NO_OLDIES 1
#define CURL_DISABLE_DEPRECATION 1
#include "spectra_fetch.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// libcurl's entry points, resolved once by load().
static struct {
    CURLcode (*global_init)(long flags);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *handle, CURLoption option, ...);
    CURLcode (*easy_perform)(CURL *handle);
    CURLcode (*easy_getinfo)(CURL *handle, CURLINFO info, ...);
    void (*easy_cleanup)(CURL *handle);
    const char *(*easy_strerror)(CURLcode code);
    char failure[200];
    int loaded;
} curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void) {
    // The OpenSSL build first (Debian's libcurl4), then the GnuTLS one (libcurl3-gnutls).
    static const char *const names[] = {"libcurl.so.4", "libcurl-gnutls.so.4"};
    void *library = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && library == NULL; i++) {
        library = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    }
    if (library == NULL) {
        const char *reason = dlerror();
        snprintf(curl.failure, sizeof curl.failure, "libcurl cannot be loaded (install libcurl4): %s",
                 reason ? reason : "not found");
        return;
    }
#define RESOLVE(field, symbol)                                                                       \
    *(void **)(&curl.field) = dlsym(library, symbol);                                                \
    if (curl.field == NULL) {                                                                        \
        snprintf(curl.failure, sizeof curl.failure, "libcurl lacks %s", symbol);                    \
        return;                                                                                      \
    }
    RESOLVE(global_init, "curl_global_init")
    RESOLVE(easy_init, "curl_easy_init")
    RESOLVE(easy_setopt, "curl_easy_setopt")
    RESOLVE(easy_perform, "curl_easy_perform")
    RESOLVE(easy_getinfo, "curl_easy_getinfo")
    RESOLVE(easy_cleanup, "curl_easy_cleanup")
    RESOLVE(easy_strerror, "curl_easy_strerror")
#undef RESOLVE
    // Once, before any handle (curl_global_init is not thread-safe in every version).
    if (curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(curl.failure, sizeof curl.failure, "libcurl failed to initialise");
        return;
    }
    curl.loaded = 1;
}

typedef struct transfer {
    unsigned char *body;
    size_t length;
    size_t capacity;
    size_t max_bytes;
    int too_large;
    const int *cancelled;
} transfer;

static size_t on_data(char *data, size_t size, size_t count, void *context) {
    transfer *t = context;
    size_t bytes = size * count;
    if (bytes > t->max_bytes - t->length) {
        t->too_large = 1;
        return 0; // aborts the transfer (CURLE_WRITE_ERROR)
    }
    if (t->length + bytes > t->capacity) {
        size_t capacity = t->capacity ? t->capacity : 64 * 1024;
        while (capacity < t->length + bytes) capacity *= 2;
        if (capacity > t->max_bytes) capacity = t->max_bytes;
        unsigned char *grown = realloc(t->body, capacity);
        if (grown == NULL) return 0;
        t->body = grown;
        t->capacity = capacity;
    }
    memcpy(t->body + t->length, data, bytes);
    t->length += bytes;
    return bytes;
}

static int on_progress(void *context, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    const transfer *t = context;
    return t->cancelled != NULL && __atomic_load_n(t->cancelled, __ATOMIC_RELAXED) ? 1 : 0;
}

void spectra_fetch_get(const char *url, long timeout_ms, size_t max_bytes, size_t offset, const int *cancelled,
                       spectra_fetch_result *result) {
    memset(result, 0, sizeof *result);
    pthread_once(&load_once, load);
    if (!curl.loaded) {
        result->status = SPECTRA_FETCH_UNAVAILABLE;
        snprintf(result->message, sizeof result->message, "%s", curl.failure);
        return;
    }
    CURL *handle = curl.easy_init();
    if (handle == NULL) {
        result->status = SPECTRA_FETCH_FAILED;
        snprintf(result->message, sizeof result->message, "libcurl could not make a transfer");
        return;
    }
    transfer t = {.max_bytes = max_bytes, .cancelled = cancelled};
    char error[CURL_ERROR_SIZE] = "";
    const long web = CURLPROTO_HTTP | CURLPROTO_HTTPS;
    curl.easy_setopt(handle, CURLOPT_URL, url);
    curl.easy_setopt(handle, CURLOPT_PROTOCOLS, web);
    curl.easy_setopt(handle, CURLOPT_REDIR_PROTOCOLS, web);
    curl.easy_setopt(handle, CURLOPT_FOLLOWLOCATION, 1L);
    curl.easy_setopt(handle, CURLOPT_MAXREDIRS, 5L);
    curl.easy_setopt(handle, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl.easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
    curl.easy_setopt(handle, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_bytes);
    curl.easy_setopt(handle, CURLOPT_WRITEFUNCTION, on_data);
    curl.easy_setopt(handle, CURLOPT_WRITEDATA, &t);
    curl.easy_setopt(handle, CURLOPT_NOPROGRESS, 0L);
    curl.easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl.easy_setopt(handle, CURLOPT_XFERINFODATA, &t);
    curl.easy_setopt(handle, CURLOPT_ERRORBUFFER, error);
    curl.easy_setopt(handle, CURLOPT_USERAGENT, "spectra-agent");
    if (offset > 0 && offset < max_bytes) curl.easy_setopt(handle, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)offset);

    CURLcode code = curl.easy_perform(handle);
    long status = 0;
    curl.easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &status);
    result->http_status = status;
    curl.easy_cleanup(handle);

    if (code == CURLE_OK) {
        result->status = SPECTRA_FETCH_OK;
        result->body = t.body;
        result->length = t.length;
        return;
    }
    // What arrived before the failure, for a resumed transfer (nothing when too large).
    if (t.too_large || code == CURLE_FILESIZE_EXCEEDED) {
        free(t.body);
    } else {
        result->body = t.body;
        result->length = t.length;
    }
    if (t.too_large || code == CURLE_FILESIZE_EXCEEDED) {
        result->status = SPECTRA_FETCH_TOO_LARGE;
        snprintf(result->message, sizeof result->message, "the body is larger than %zu bytes", max_bytes);
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
        result->status = SPECTRA_FETCH_TIMED_OUT;
        snprintf(result->message, sizeof result->message, "no complete response within %ld ms", timeout_ms);
    } else if (code == CURLE_ABORTED_BY_CALLBACK) {
        result->status = SPECTRA_FETCH_CANCELLED;
        snprintf(result->message, sizeof result->message, "cancelled");
    } else {
        result->status = SPECTRA_FETCH_FAILED;
        snprintf(result->message, sizeof result->message, "%s", error[0] ? error : curl.easy_strerror(code));
    }
}

void spectra_fetch_cancel(int *cancelled) { __atomic_store_n(cancelled, 1, __ATOMIC_RELAXED); }

void spectra_fetch_release(spectra_fetch_result *result) {
    free(result->body);
    result->body = NULL;
    result->length = 0;
}
