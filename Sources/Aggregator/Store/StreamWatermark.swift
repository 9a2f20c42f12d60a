import Foundation

/// How a stream's contiguous watermark moves over the dedupe keys stored above it; the same
/// for every store.
enum StreamWatermark {
    /// Advances `contiguous` over `above` (ascending seqs stored above it). A gap open for more
    /// than `horizon` seconds since `gapSince` is stepped over. Returns the new watermark and
    /// when the gap still open above it was first seen (nil when none is).
    static func advance(
        contiguous start: UInt64, gapSince: Double?, above seqs: [UInt64], now: Date, horizon: Double
    ) -> (contiguous: UInt64, gapSince: Double?) {
        var contiguous = start
        for seq in seqs {
            if seq == contiguous + 1 {
                contiguous = seq
            } else if seq > contiguous + 1 {
                if contiguous == start, let since = gapSince, now.timeIntervalSince1970 - since > horizon {
                    contiguous = seq
                } else {
                    break
                }
            }
        }
        var since = contiguous == start ? gapSince : nil
        if seqs.contains(where: { $0 > contiguous }), since == nil { since = now.timeIntervalSince1970 }
        return (contiguous, since)
    }
}
