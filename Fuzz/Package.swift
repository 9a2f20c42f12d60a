// swift-tools-version: 6.2
//
// libFuzzer targets for everything that reads untrusted bytes. Build and run with
// Deploy/fuzz.sh (it passes -sanitize=fuzzer,address and -parse-as-library: each target
// defines LLVMFuzzerTestOneInput and libFuzzer supplies main).

import PackageDescription

let package = Package(
    name: "spectra-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "spectra-fleet", path: "..")],
    targets: [
        .target(name: "FuzzDriver"),
        .executableTarget(name: "FuzzEnvelope", dependencies: ["FuzzDriver", .product(name: "SpectraProtocol", package: "spectra-fleet")]),
        .executableTarget(name: "FuzzSignedDocument", dependencies: ["FuzzDriver", .product(name: "SpectraProtocol", package: "spectra-fleet")]),
        .executableTarget(name: "FuzzTopic", dependencies: ["FuzzDriver", .product(name: "SpectraProtocol", package: "spectra-fleet")]),
        .executableTarget(name: "FuzzProfile", dependencies: ["FuzzDriver", .product(name: "SpectraConfig", package: "spectra-fleet")]),
        .executableTarget(name: "FuzzControlRequest", dependencies: ["FuzzDriver", .product(name: "EdgeAgent", package: "spectra-fleet")]),
        .executableTarget(
            name: "FuzzHeadbandFrame",
            dependencies: ["FuzzDriver", .product(name: "HeadbandLink", package: "spectra-fleet"), .product(name: "Waveform", package: "spectra-fleet")]),
        .executableTarget(
            name: "FuzzStatsStore",
            dependencies: [
                "FuzzDriver", .product(name: "Aggregator", package: "spectra-fleet"),
                .product(name: "SpectraProtocol", package: "spectra-fleet"),
            ]),
    ]
)
