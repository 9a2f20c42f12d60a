import FuzzDriver

@_cdecl("FuzzHeadbandFrame_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { start, size in test(start, size) }
}
