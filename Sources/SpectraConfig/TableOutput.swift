import Foundation

/// Prints rows as aligned columns; the first row is the header. What the command-line tools
/// print for lists (`spectra-ctl gateways`, `spectra-aggregator users list`, ...).
public func printTable(_ rows: [[String]]) {
    guard let header = rows.first else { return }
    var widths = header.map(\.count)
    for row in rows { for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) } }
    for row in rows {
        print(row.enumerated().map { index, cell in cell.padding(toLength: widths[index], withPad: " ", startingAt: 0) }.joined(separator: "  "))
    }
}
