// swift-tools-version: 6.2
//
// Benchmarks, kept out of the product's build and test run. Run from this folder:
//   swift package benchmark
// The figures in docs/performance.md come from Deploy/bench.sh (release-built, with references).

import Foundation
import PackageDescription

/// A path dependency is known by its folder's name, whatever the clone is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "spectra-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "WaveformBenchmark",
            dependencies: [
                .product(name: "Waveform", package: root),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/WaveformBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
