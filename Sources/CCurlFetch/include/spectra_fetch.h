#ifndef SPECTRA_FETCH_H
#define SPECTRA_FETCH_H

#include <stddef.h>

/// One HTTP(S) GET through libcurl, which is loaded (dlopen) on the first call rather than
/// linked: a gateway downloads firmware a few times a year, and the HTTP stack (libcurl and
/// the TLS, Kerberos and LDAP libraries it brings) should not sit in the agent's memory for
/// the rest of the time.

typedef enum spectra_fetch_status {
    SPECTRA_FETCH_OK = 0,
    /// libcurl could not be loaded (`message` says what dlopen said).
    SPECTRA_FETCH_UNAVAILABLE = 1,
    /// The body was longer than `max_bytes`; the transfer stopped there.
    SPECTRA_FETCH_TOO_LARGE = 2,
    /// The whole transfer took longer than `timeout_ms`.
    SPECTRA_FETCH_TIMED_OUT = 3,
    /// `*cancelled` was set while the transfer ran.
    SPECTRA_FETCH_CANCELLED = 4,
    /// Anything else: resolving, connecting, TLS, an unsupported scheme (`message` says).
    SPECTRA_FETCH_FAILED = 5,
} spectra_fetch_status;

typedef struct spectra_fetch_result {
    spectra_fetch_status status;
    /// The HTTP status of the last response (after redirects), 0 when none came.
    long http_status;
    /// The body, `length` bytes, allocated with malloc; release it with spectra_fetch_release.
    unsigned char *body;
    size_t length;
    char message[256];
} spectra_fetch_result;

/// GETs `url` (http or https only, redirects followed up to 5 times within those schemes,
/// certificates verified) into memory. Blocks the calling thread for at most `timeout_ms`.
/// A body over `max_bytes` is refused as soon as it is announced or, without a length, as
/// soon as that many bytes have come. `cancelled`, when not NULL, is polled while the
/// transfer runs; set it with spectra_fetch_cancel from another thread.
/// With `offset` above 0 it asks for the bytes from there on (`Range`): a `206 Partial
/// Content` answer holds only those (`max_bytes` then counts from the offset); a `200` holds the
/// whole body again. A transfer that fails part-way still hands back the bytes it had.
void spectra_fetch_get(const char *url, long timeout_ms, size_t max_bytes, size_t offset, const int *cancelled,
                       spectra_fetch_result *result);

/// Sets a cancellation flag that a running spectra_fetch_get polls.
void spectra_fetch_cancel(int *cancelled);

/// Frees the body of a result.
void spectra_fetch_release(spectra_fetch_result *result);

#endif
