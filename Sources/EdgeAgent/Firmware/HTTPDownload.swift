import CCurlFetch
import Foundation

/// One HTTP(S) GET into memory, with a size limit enforced while the body arrives and a limit
/// on the whole transfer's time.
///
/// It goes through libcurl, loaded on the first download rather than linked into the agent
/// (see `CCurlFetch`): an idle gateway does not carry the HTTP and TLS stack in its memory.
/// The blocking transfer runs on a thread of its own, never on the concurrency pool.
public enum HTTPDownload {
    /// GETs `url` (`http` or `https`; redirects followed within those schemes).
    /// - Parameters:
    ///   - maxBytes: the longest body accepted; a longer one stops the transfer.
    ///   - timeout: the limit on the whole transfer, connecting included.
    /// - Returns: the body of a `200 OK` response.
    ///   - resumeFrom: bytes of an earlier attempt that failed part-way: only the rest is asked
    ///     for (`Range`), and the whole body returned (a server that answers `200` sends it all).
    /// - Throws: ``HTTPDownloadError``, whose ``HTTPDownloadError/partial`` holds what had arrived.
    public static func get(_ url: String, maxBytes: Int, timeout: Duration, resumeFrom: [UInt8] = []) async throws(HTTPDownloadError) -> [UInt8] {
        let cancelled = CancelFlag()
        let milliseconds = max(1, timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        let outcome: Result<[UInt8], HTTPDownloadError> = await withTaskCancellationHandler {
            // It blocks for up to `timeout`: off the tasks' threads, and beside other transfers
            // rather than queued behind them, its timeout not yet running. A small stack: a
            // fleet simulator may run thousands at once.
            await onThreadOfItsOwn(stackSize: 512 << 10) {
                perform(url, timeoutMilliseconds: Int(milliseconds), maxBytes: maxBytes, resumeFrom: resumeFrom, cancelled: cancelled)
            }
        } onCancel: {
            cancelled.set()
        }
        return try outcome.get()
    }

    private static func perform(
        _ url: String, timeoutMilliseconds: Int, maxBytes: Int, resumeFrom earlier: [UInt8], cancelled: CancelFlag
    ) -> Result<[UInt8], HTTPDownloadError> {
        var result = spectra_fetch_result()
        let offset = earlier.count < maxBytes ? earlier.count : 0
        spectra_fetch_get(url, timeoutMilliseconds, max(0, maxBytes), offset, cancelled.pointer, &result)
        defer { spectra_fetch_release(&result) }
        let message = withUnsafeBytes(of: result.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let received = result.body.map { [UInt8](UnsafeBufferPointer(start: $0, count: result.length)) } ?? []
        // A 206 continues the earlier bytes; anything else starts over.
        let body = offset > 0 && result.http_status == 206 ? Array(earlier.prefix(offset)) + received : received
        switch result.status {
        case SPECTRA_FETCH_OK:
            guard result.http_status == 200 || (offset > 0 && result.http_status == 206) else {
                return .failure(HTTPDownloadError(.httpStatus, "HTTP \(result.http_status) from \(url)"))
            }
            return .success(body)
        case SPECTRA_FETCH_TOO_LARGE:
            return .failure(HTTPDownloadError(.tooLarge, "\(url) sent more than \(maxBytes) bytes"))
        case SPECTRA_FETCH_TIMED_OUT:
            return .failure(HTTPDownloadError(.timedOut, "\(url): \(message)", partial: body))
        case SPECTRA_FETCH_CANCELLED:
            return .failure(HTTPDownloadError(.cancelled, "the download of \(url) was cancelled"))
        case SPECTRA_FETCH_UNAVAILABLE:
            return .failure(HTTPDownloadError(.unavailable, message))
        default:
            return .failure(HTTPDownloadError(.failed, "\(url): \(message)", partial: body))
        }
    }
}

/// Why a download failed.
public struct HTTPDownloadError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable {
        /// libcurl is not installed (the message says what loading it said).
        case unavailable
        /// The body was longer than allowed.
        case tooLarge
        /// The transfer did not finish in time.
        case timedOut
        /// The waiting task was cancelled.
        case cancelled
        /// A response other than `200 OK`.
        case httpStatus
        /// Resolving, connecting, TLS or an unsupported scheme.
        case failed
    }

    public var code: Code
    public var description: String
    /// The bytes that had arrived (from the start of the body) when it failed part-way.
    public var partial: [UInt8]

    init(_ code: Code, _ description: String, partial: [UInt8] = []) {
        self.code = code
        self.description = description
        self.partial = partial
    }
}

/// A flag the C transfer polls, set from the cancelling task.
private final class CancelFlag: @unchecked Sendable {
    // Written once by spectra_fetch_cancel and read by the transfer, both atomically.
    let pointer: UnsafeMutablePointer<Int32>

    init() {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: 0)
    }

    deinit { pointer.deallocate() }

    func set() { spectra_fetch_cancel(pointer) }
}
