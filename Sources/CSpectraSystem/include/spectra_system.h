#ifndef SPECTRA_SYSTEM_H
#define SPECTRA_SYSTEM_H

/// 1 when the kernel says the wall clock is synchronised (an NTP daemon, whichever, has
/// cleared STA_UNSYNC and adjtimex does not answer TIME_ERROR), 0 otherwise.
int spectra_clock_synchronised(void);

/// The user and process on the other end of a connected Unix socket (SO_PEERCRED).
/// Returns 0 and fills `uid` and `pid`, or -1 (errno set).
int spectra_peer_credentials(int fd, unsigned int *uid, int *pid);


/// Opens a new pseudo-terminal: returns its controlling side's descriptor and writes the
/// terminal's path into `path`; -1 with errno on failure.
int spectra_open_pseudo_terminal(char *path, unsigned long capacity);

/// glibc's allocator for a process whose outbox commits on worker threads: up to 4 MiB freed
/// memory is kept per heap (M_TRIM_THRESHOLD), blocks from 1 MiB up still get pages of their
/// own (M_MMAP_THRESHOLD, which setting the trim threshold would otherwise stop sliding).
/// Call once, at start, before the threads begin.
void spectra_tune_allocator(void);

#endif
