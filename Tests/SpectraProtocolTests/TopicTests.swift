import Testing
@testable import SpectraProtocol

@Suite("Topics")
struct TopicTests {
    static let fleet = try! Identifier("demo")
    static let gw = try! Identifier("gw-0001")
    static let group = try! Identifier("clinic_a")

    static let all: [(Topic, String)] = [
        (.status(fleet: fleet, gateway: gw), "spectra/v1/demo/gw/gw-0001/status"),
        (.event(fleet: fleet, gateway: gw), "spectra/v1/demo/gw/gw-0001/event"),
        (.telemetry(fleet: fleet, gateway: gw), "spectra/v1/demo/gw/gw-0001/telemetry"),
        (.state(fleet: fleet, gateway: gw), "spectra/v1/demo/gw/gw-0001/state"),
        (.gatewayConfig(fleet: fleet, gateway: gw), "spectra/v1/demo/gw/gw-0001/cmd/config"),
        (.groupConfig(fleet: fleet, group: group), "spectra/v1/demo/group/clinic_a/cmd/config"),
        (.fleetConfig(fleet: fleet), "spectra/v1/demo/all/cmd/config"),
        (.firmware(fleet: fleet, gateway: gw), "spectra/v1/demo/gw/gw-0001/cmd/firmware"),
        (.stop(fleet: fleet, gateway: gw), "spectra/v1/demo/gw/gw-0001/cmd/stop"),
        (.rebirth(fleet: fleet, gateway: gw), "spectra/v1/demo/gw/gw-0001/cmd/rebirth"),
        (.statsSummary(fleet: fleet), "spectra/v1/demo/stats/summary"),
        (.statsGateway(fleet: fleet, gateway: gw), "spectra/v1/demo/stats/gw/gw-0001"),
    ]

    @Test("every topic of the contract builds and parses back", arguments: all.map(\.1))
    func roundTrip(path: String) throws {
        let topic = try #require(Self.all.first { $0.1 == path }?.0)
        #expect(topic.path == path)
        #expect(try Topic(parsing: path) == topic)
        #expect(topic.fleet == Self.fleet)
    }

    static let hostile: [(String, ProtocolError.Code)] = [
        ("spectra/v2/demo/gw/gw-1/event", .invalidTopic),
        ("Spectra/v1/demo/gw/gw-1/event", .invalidTopic),
        ("/spectra/v1/demo/gw/gw-1/event", .invalidTopic),
        ("spectra/v1/demo/gw/gw-1/event/extra", .invalidTopic),
        ("spectra/v1/demo/gw/gw-1", .invalidTopic),
        ("spectra/v1/demo/gw/gw-1/cmd/reboot", .invalidTopic),
        ("spectra/v1/demo/gw/gw-1/cmd/config/x", .invalidTopic),
        ("spectra/v1/demo/stats/summary/x", .invalidTopic),
        ("$share/aggregators/spectra/v1/demo/gw/gw-1/event", .invalidTopic),
        ("spectra/v1/demo/gw/+/event", .invalidIdentifier),
        ("spectra/v1/#", .invalidTopic),
        ("spectra/v1/#/gw/gw-1/event", .invalidIdentifier),
        ("spectra/v1/demo/gw//event", .invalidIdentifier),
        ("spectra/v1/demo/gw/gw\u{0}1/event", .invalidIdentifier),
        ("spectra/v1/demo/gw/gw 1/event", .invalidIdentifier),
        // A combining mark after '/' makes one Character of the two; MQTT still splits there.
        ("spectra/v1/demo/gw/gw-1/\u{301}event", .invalidTopic),
        ("spectra/v1/demo/gw/\u{301}gw-1/event", .invalidIdentifier),
        ("spectra/v1/demo/group/a+b/cmd/config", .invalidIdentifier),
        ("spectra/v1/" + String(repeating: "f", count: 65) + "/all/cmd/config", .invalidIdentifier),
        ("spectra/v1/demo/gw/" + String(repeating: "x", count: 600) + "/event", .invalidTopic),
        ("", .invalidTopic),
    ]

    @Test("a topic outside the contract is refused", arguments: hostile.indices)
    func refused(index: Int) {
        let (topic, code) = Self.hostile[index]
        #expect {
            _ = try Topic(parsing: topic)
        } throws: { error in
            (error as? ProtocolError)?.code == code
        }
    }

    @Test("identifiers follow [A-Za-z0-9_-]{1,64}")
    func identifiers() {
        #expect(Identifier.isValid("gw-0001_A"))
        #expect(Identifier.isValid(String(repeating: "a", count: 64)))
        #expect(!Identifier.isValid(String(repeating: "a", count: 65)))
        #expect(!Identifier.isValid(""))
        #expect(!Identifier.isValid("gw.1"))
        #expect(!Identifier.isValid("gwé"))
    }

    @Test("subscription filters")
    func filters() {
        #expect(TopicFilter.allGateways(fleet: Self.fleet, leaf: "event") == "spectra/v1/demo/gw/+/event")
        #expect(TopicFilter.allFleets(leaf: "status") == "spectra/v1/+/gw/+/status")
        #expect(TopicFilter.shared(group: "aggregators", "spectra/v1/+/gw/+/event") == "$share/aggregators/spectra/v1/+/gw/+/event")
        #expect(TopicFilter.commands(fleet: Self.fleet, gateway: Self.gw) == "spectra/v1/demo/gw/gw-0001/cmd/+")
    }
}
