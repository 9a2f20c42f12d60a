#ifndef SPECTRA_SYSTEM_CLOCK_H
#define SPECTRA_SYSTEM_CLOCK_H

/// 1 when the kernel says the wall clock is synchronised (an NTP daemon, whichever, has
/// cleared STA_UNSYNC and adjtimex does not answer TIME_ERROR), 0 otherwise.
int spectra_clock_synchronised(void);

#endif
