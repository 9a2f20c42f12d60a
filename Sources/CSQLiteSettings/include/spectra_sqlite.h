#ifndef SPECTRA_SQLITE_H
#define SPECTRA_SQLITE_H

/// Process-wide SQLite settings, which `sqlite3_config` (a C variadic function, out of Swift's
/// reach) takes only before the library's first use.
///
/// Memory statistics are turned off: SQLite otherwise takes one process-wide mutex around every
/// allocation it makes, and threads writing to different databases (a simulator's outboxes on
/// both cores, the aggregator's writer beside its readers) queue on it.
///
/// Call before the first database opens; later calls, and calls after SQLite was first used,
/// change nothing. Returns 1 when the setting took effect, 0 otherwise.
int spectra_sqlite_configure(void);

#endif
