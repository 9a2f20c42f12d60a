import Foundation
import SpectraProtocol

/// Topics: whatever parses must print back to the same string.
@_cdecl("LLVMFuzzerTestOneInput")
public func test(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeRawBufferPointer(start: start, count: count), as: UTF8.self)
    if let topic = try? Topic(parsing: text) {
        precondition(topic.path == text, "topic \(text) printed back as \(topic.path)")
    }
    return 0
}
