// swift-tools-version: 6.2
//
// Spectra Fleet: the edge agent, aggregator, operator CLI and fleet simulator for the
// Spectra Sculpt headband. See README.md and docs/architecture.md for the module map.

import PackageDescription

let package = Package(
    name: "spectra-fleet",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "spectra-agent", targets: ["spectra-agent"]),
        .executable(name: "spectra-aggregator", targets: ["spectra-aggregator"]),
        .executable(name: "spectra-ctl", targets: ["spectra-ctl"]),
        .executable(name: "spectra-fleetsim", targets: ["spectra-fleetsim"]),
        .executable(name: "spectra-headband-emu", targets: ["spectra-headband-emu"]),
        .library(name: "SpectraProtocol", targets: ["SpectraProtocol"]),
        .library(name: "Waveform", targets: ["Waveform"]),
        .library(name: "HeadbandLink", targets: ["HeadbandLink"]),
        .library(name: "MQTT", targets: ["MQTT"]),
        .library(name: "SpectraTesting", targets: ["SpectraTesting"]),
        .library(name: "SpectraConfig", targets: ["SpectraConfig"]),
        .library(name: "EdgeAgent", targets: ["EdgeAgent"]),
        .library(name: "Aggregator", targets: ["Aggregator"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: ["YAML"]),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        // C
        .systemLibrary(
            name: "CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        // libcurl's header only: the library is loaded at run time, on the first download.
        .target(name: "CCurlFetch"),
        // Process-wide SQLite settings (`sqlite3_config` is variadic: not callable from Swift).
        .target(name: "CSQLiteSettings", linkerSettings: [.linkedLibrary("sqlite3")]),
        // Buffered reads for the MQTT loop's sockets (defines the process's `read` and `close`).
        // What the kernel says: whether the wall clock is synchronised (adjtimex), and who is
        // on the other end of a Unix socket (SO_PEERCRED).
        .target(name: "CSpectraSystem"),

        // Libraries
        .target(
            name: "SpectraProtocol",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "SpectraConfig",
            dependencies: [
                "MQTT",
                "SpectraProtocol",
                "Waveform",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(name: "Waveform"),
        // The headband link (docs/headband-protocol.md): framing, messages, the gateway's side
        // over a serial port, and the device's side the emulator runs.
        .target(name: "HeadbandLink", dependencies: ["Waveform", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "MQTT",
            dependencies: [
                "CMosquitto",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "Outbox",
            dependencies: [
                "MQTT", "CSQLiteSettings",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "EdgeAgent",
            dependencies: [
                "SpectraProtocol", "SpectraConfig", "Waveform", "HeadbandLink", "MQTT", "Outbox", "CCurlFetch", "CSpectraSystem",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "Aggregator",
            dependencies: [
                "SpectraProtocol", "SpectraConfig", "MQTT", "CSQLiteSettings",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "FleetSim",
            dependencies: [
                "EdgeAgent", "Outbox", "MQTT", "SpectraProtocol", "Waveform",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "FleetControl",
            dependencies: [
                "SpectraProtocol", "SpectraConfig", "MQTT",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(name: "SpectraTesting"),

        // Executables: argument parsing, config loading, services.
        .executableTarget(
            name: "spectra-agent",
            dependencies: [
                "EdgeAgent", "SpectraConfig", "Waveform",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "spectra-aggregator",
            dependencies: [
                "Aggregator", "SpectraConfig",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "spectra-ctl",
            dependencies: [
                "SpectraProtocol", "SpectraConfig", "FleetControl", "MQTT",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "spectra-headband-emu",
            dependencies: ["HeadbandLink", "Waveform", "SpectraProtocol", "CSpectraSystem", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "spectra-fleetsim",
            dependencies: [
                "EdgeAgent", "FleetSim", "SpectraConfig", "SpectraProtocol", "MQTT", "Waveform",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Release-built measurements (see Deploy/bench.sh); not part of the product.
        .executableTarget(
            name: "spectra-bench",
            dependencies: [
                "MQTT", "Waveform", "Outbox", "Aggregator", "EdgeAgent", "SpectraConfig", "SpectraProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // Tests
        .testTarget(name: "CMosquittoTests", dependencies: ["CMosquitto"]),
        .testTarget(
            name: "SpectraProtocolTests",
            dependencies: ["SpectraProtocol", "SpectraTesting", "Waveform"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(name: "SpectraConfigTests", dependencies: ["SpectraConfig", "EdgeAgent", "Aggregator", "Waveform"]),
        .testTarget(name: "SpectraTestingTests", dependencies: ["SpectraTesting"]),
        .testTarget(name: "MQTTTests", dependencies: ["MQTT", "SpectraTesting"]),
        .testTarget(name: "WaveformTests", dependencies: ["Waveform", "HeadbandLink"]),
        .testTarget(name: "EdgeAgentTests", dependencies: ["EdgeAgent", "SpectraProtocol", "SpectraTesting", "Waveform"]),
        .testTarget(
            name: "OutboxTests",
            dependencies: [
                "Outbox", "MQTT", "SpectraTesting",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "AggregatorTests",
            dependencies: [
                "Aggregator", "SpectraConfig", "SpectraProtocol", "SpectraTesting", "MQTT", "Waveform",
                .product(name: "GRDB", package: "GRDB.swift"), .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        .testTarget(name: "FleetSimTests", dependencies: ["FleetSim"]),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["SpectraTesting", "SpectraProtocol", "MQTT", "HeadbandLink", .product(name: "Logging", package: "swift-log")]
        ),
    ]
)
