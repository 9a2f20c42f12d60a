import EdgeAgent
import Foundation

/// The local control socket's request lines.
@_cdecl("LLVMFuzzerTestOneInput")
public func test(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    _ = ControlRequest.parse(Data(bytes: start, count: count))
    return 0
}
