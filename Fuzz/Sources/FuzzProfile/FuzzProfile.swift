import Foundation
import SpectraConfig

/// Calibration profiles (YAML): any bytes give a profile or one ConfigurationError.
@_cdecl("LLVMFuzzerTestOneInput")
public func test(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeRawBufferPointer(start: start, count: count), as: UTF8.self)
    _ = try? ProfileLoader.parse(text, source: "fuzz")
    return 0
}
