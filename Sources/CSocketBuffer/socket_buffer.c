#include "spectra_socket_buffer.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

enum { capacity = 16384, max_descriptors = 65536 };

typedef struct {
    size_t start, end;
    bool drained;
    unsigned char bytes[capacity];
} socket_buffer;

/// Indexed by descriptor; only sockets the loop attached have an entry.
static _Atomic(socket_buffer *) buffers[max_descriptors];

static socket_buffer *buffer_of(int fd) {
    if (fd < 0 || fd >= max_descriptors) return NULL;
    return atomic_load_explicit(&buffers[fd], memory_order_acquire);
}

bool spectra_socket_buffer_attach(int fd) {
    if (fd < 0 || fd >= max_descriptors) return false;
    socket_buffer *buffer = malloc(sizeof(socket_buffer));
    if (buffer == NULL) return false;
    buffer->start = 0;
    buffer->end = 0;
    buffer->drained = false;
    free(atomic_exchange_explicit(&buffers[fd], buffer, memory_order_acq_rel));
    return true;
}

void spectra_socket_buffer_detach(int fd) {
    // Looked at before it is written: every `close` in the process comes here, and writing
    // the table's entry for each would make its pages resident.
    if (buffer_of(fd) == NULL) return;
    free(atomic_exchange_explicit(&buffers[fd], NULL, memory_order_acq_rel));
}

size_t spectra_socket_buffered(int fd) {
    socket_buffer *buffer = buffer_of(fd);
    return buffer == NULL ? 0 : buffer->end - buffer->start;
}

bool spectra_socket_drained(int fd) {
    socket_buffer *buffer = buffer_of(fd);
    return buffer != NULL && buffer->drained;
}

ssize_t read(int fd, void *destination, size_t count) {
    socket_buffer *buffer = buffer_of(fd);
    if (buffer == NULL || count == 0) return syscall(SYS_read, fd, destination, count);
    if (buffer->start == buffer->end) {
        buffer->start = 0;
        buffer->end = 0;
        // A read as large as the buffer gains nothing from it.
        ssize_t got = count >= capacity ? syscall(SYS_read, fd, destination, count) : syscall(SYS_read, fd, buffer->bytes, capacity);
        buffer->drained = got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        if (got <= 0 || count >= capacity) return got;
        buffer->end = (size_t)got;
    }
    size_t available = buffer->end - buffer->start;
    size_t taken = count < available ? count : available;
    memcpy(destination, buffer->bytes + buffer->start, taken);
    buffer->start += taken;
    return (ssize_t)taken;
}

int close(int fd) {
    spectra_socket_buffer_detach(fd);
    return (int)syscall(SYS_close, fd);
}

static _Thread_local bool refuse_socketpair = false;

void spectra_socketpair_refused(bool refused) { refuse_socketpair = refused; }

int socketpair(int domain, int type, int protocol, int pair[2]) {
    if (refuse_socketpair) {
        errno = EMFILE;
        return -1;
    }
    return (int)syscall(SYS_socketpair, domain, type, protocol, pair);
}
