#if canImport(Glibc)
import Glibc
#endif

/// Serial devices and pseudo-terminals as the link uses them: raw 8-bit bytes, no echo, no
/// line editing, no translation (a USB CDC-ACM dock ignores the speed; a UART takes 115200).
public enum SerialPort {
    /// Opens `path` for reading and writing in raw mode; the error says what failed.
    public static func open(_ path: String) -> Result<Int32, SerialError> {
        let fd = Glibc.open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(SerialError("cannot open \(path): \(String(cString: strerror(errno)))")) }
        if let error = makeRaw(fd) {
            Glibc.close(fd)
            return .failure(SerialError("\(path) is not a serial device or terminal: \(error)"))
        }
        return .success(fd)
    }

    /// Puts a terminal into raw mode at 115200 baud; nil on success, else why not.
    public static func makeRaw(_ fd: Int32) -> String? {
        var settings = termios()
        guard tcgetattr(fd, &settings) == 0 else { return String(cString: strerror(errno)) }
        cfmakeraw(&settings)
        cfsetspeed(&settings, speed_t(B115200))
        settings.c_cflag |= tcflag_t(CLOCAL | CREAD)
        guard tcsetattr(fd, TCSANOW, &settings) == 0 else { return String(cString: strerror(errno)) }
        return nil
    }

    /// Writes all of `bytes`; false when the descriptor failed.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                Glibc.write(fd, buffer.baseAddress.map { $0 + written }, bytes.count - written)
            }
            if result < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return false
            }
            written += result
        }
        return true
    }

    /// Waits up to `milliseconds` for bytes and reads them: `.bytes`, `.timeout`, or `.closed`
    /// with the reason (the device went away: EOF, or EIO when a pty's other side closed).
    public static func read(_ fd: Int32, timeoutMilliseconds: Int32) -> ReadResult {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, timeoutMilliseconds)
        if ready < 0 { return errno == EINTR ? .timeout : .closed(String(cString: strerror(errno))) }
        if ready == 0 { return .timeout }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if count > 0 { return .bytes(Array(buffer[0..<count])) }
        if count == 0 { return .closed("the device closed the link") }
        if errno == EINTR || errno == EAGAIN { return .timeout }
        return .closed(String(cString: strerror(errno)))
    }

    public enum ReadResult {
        case bytes([UInt8])
        case timeout
        case closed(String)
    }

    public struct SerialError: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }
}
