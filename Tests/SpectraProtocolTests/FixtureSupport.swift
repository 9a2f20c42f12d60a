import Foundation
import Testing

/// Golden files under `Fixtures/`: the wire format may not drift without a visible diff.
enum Fixture {
    static var directory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    }

    /// The fixture's bytes. With `SPECTRA_RECORD_FIXTURES=1` the file is (re)written from `actual`.
    static func expect(_ actual: Data, matches name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let url = directory.appendingPathComponent(name)
        if ProcessInfo.processInfo.environment["SPECTRA_RECORD_FIXTURES"] == "1" {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try (actual + Data("\n".utf8)).write(to: url)
            return
        }
        let stored = try Data(contentsOf: url)
        let expected = stored.last == 0x0A ? stored.dropLast() : stored
        #expect(
            String(decoding: actual, as: UTF8.self) == String(decoding: expected, as: UTF8.self),
            "wire format drifted from Fixtures/\(name)", sourceLocation: sourceLocation)
    }

    static func data(_ name: String) throws -> Data {
        try Data(contentsOf: directory.appendingPathComponent(name))
    }
}
