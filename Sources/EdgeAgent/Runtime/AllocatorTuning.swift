import CSpectraSystem

/// glibc's allocator, set for a process whose outbox commits on worker threads (the agent and
/// the fleet simulator).
///
/// Every outbox transaction makes SQLite allocate and free a few tens of KiB. On a worker
/// thread's arena, glibc hands freed memory at the top of the heap back to the kernel
/// (`madvise(MADV_DONTNEED)`) once 128 KiB are free, and the next transaction faults the same
/// pages in again: at 1,500 simulated gateways that was one `madvise` (with a TLB shootdown on
/// every core) and one page fault per message. Keeping up to 4 MiB free per heap ends it
/// (`docs/decisions/allocator-tuning.md`).
///
/// Setting the trim threshold switches off glibc's sliding mmap threshold, so that is set too:
/// blocks from 1 MiB up (a firmware image) still get pages of their own and go back at `free`.
public enum AllocatorTuning {
    /// Applies the settings; call once, at start, before the threads begin.
    public static func apply() {
        spectra_tune_allocator()
    }
}
