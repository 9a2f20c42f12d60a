#ifndef SPECTRA_SOCKET_BUFFER_H
#define SPECTRA_SOCKET_BUFFER_H

#include <stdbool.h>
#include <stddef.h>

/// Read buffering for sockets the MQTT event loop owns.
///
/// libmosquitto reads every packet with several `read` calls: one for the command byte, one
/// per byte of the remaining length, then the rest. For a backlog of small messages that is
/// four system calls per message. This file defines `read` and `close` for the process: for a
/// socket given a buffer with `spectra_socket_buffer_attach`, `read` is served from a
/// 16 KiB buffer refilled with one system call; every other descriptor goes straight to the
/// system call, as before. `close` drops a socket's buffer, so a descriptor number reused for
/// another file never sees its bytes. It also defines `socketpair` (see
/// `spectra_socketpair_refused`).
///
/// A socket's buffer may be used from one thread at a time (the loop's).

/// Gives `fd` a read buffer. Returns false when it cannot (out of memory, or `fd` out of range):
/// the socket is then read unbuffered.
bool spectra_socket_buffer_attach(int fd);

/// Drops `fd`'s read buffer, with any bytes still in it.
void spectra_socket_buffer_detach(int fd);

/// Bytes read from `fd` and not yet taken: readiness from epoll no longer covers them.
size_t spectra_socket_buffered(int fd);

/// Whether the last read of `fd` found its buffer empty and the socket too (EAGAIN).
bool spectra_socket_drained(int fd);

/// While set (for the calling thread only), `socketpair` fails.
///
/// libmosquitto makes a socket pair in `mosquitto_new` to wake its own loop thread
/// (`mosquitto_loop_forever`), and then writes a byte to it for every packet it queues. A
/// client that drives the socket itself never reads that pair: the writes fill it and go on
/// failing, a wasted system call per packet. Without the pair, libmosquitto writes nothing.
void spectra_socketpair_refused(bool refused);

#endif
