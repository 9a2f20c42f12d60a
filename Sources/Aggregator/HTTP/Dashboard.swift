/// The dashboard page: one self-contained HTML file (no external scripts, fonts or styles).
enum Dashboard {
    static let page: [UInt8] = Array(html.utf8)
    static let html = #"""
<!doctype html><title>Spectra Fleet</title>
"""#
}
