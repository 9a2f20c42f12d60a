import ArgumentParser
import CSpectraSystem
import Foundation
import HeadbandLink
import SpectraProtocol
import Waveform

#if canImport(Glibc)
import Glibc
#endif

/// Plays the headband's side of the link on a pseudo-terminal: the simulated headband's
/// physics and scripted faults behind docs/headband-protocol.md. Point an agent at the path it
/// prints (`headband.port`); killing the emulator is pulling the plug.
@main
struct HeadbandEmulator: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectra-headband-emu",
        abstract: "Emulate a Spectra Sculpt headband on a pseudo-terminal.",
        discussion: """
            Prints the pseudo-terminal's path as its first line of output once it is ready; set the
            agent's headband.port to it (or to --link, a stable name). Then one line per event
            (a session begun, the watchdog stopping output). Runs until SIGTERM or SIGINT.

            Examples:
              spectra-headband-emu --link /tmp/headband
              spectra-agent run --config Config/agent.yaml --set headband.port=/tmp/headband
              spectra-headband-emu --faults liftoff@session+30+3 --corrupt-every 50
            """,
        version: SpectraVersion.current)

    @Option(help: ArgumentHelp("Also make this path a symbolic link to the pseudo-terminal.", valueName: "path"))
    var link: String?
    @Option(help: "Electrode channels the headband has (1-16).") var channels = 16
    @Option(help: "Compliance voltage of its current source, volts.") var complianceVolts = 11.0
    @Option(help: "Firmware version it reports.") var firmware = "2.4.0"
    @Option(help: "Seed of the electrode and noise model.") var seed: UInt64 = 1
    @Option(help: ArgumentHelp("Stop output when the gateway is silent this long, milliseconds (100-10000).", valueName: "ms"))
    var watchdogMs = 1000
    @Option(
        parsing: .singleValue,
        help: ArgumentHelp("A headband fault, as the agent's headband.faults (liftoff@session+30+3, short@session+60:1, ...).", valueName: "fault"))
    var faults: [String] = []
    @Option(help: ArgumentHelp("Damage one byte of every Nth frame it sends (0: none).", valueName: "n"))
    var corruptEvery = 0
    @Option(help: ArgumentHelp("Stop answering once a session has stimulated this many seconds (a device gone silent).", valueName: "seconds"))
    var silentAfter: Double?

    func validate() throws {
        guard (1...16).contains(channels) else { throw ValidationError("--channels must be 1-16") }
        guard (100...10_000).contains(watchdogMs) else { throw ValidationError("--watchdog-ms must be 100-10000") }
        guard complianceVolts.isFinite, (1...60).contains(complianceVolts) else { throw ValidationError("--compliance-volts must be 1-60") }
        guard corruptEvery >= 0 else { throw ValidationError("--corrupt-every must be 0 or more") }
        for fault in faults where ScriptedFault(script: fault) == nil {
            throw ValidationError("--faults: '\(fault)' is not a fault script like liftoff@session+30+3")
        }
    }

    func run() throws {
        let scripted = faults.compactMap(ScriptedFault.init(script:))
        var device = HeadbandDevice(
            band: SimulatedHeadband(
                channels: channels, complianceVolts: complianceVolts, seed: seed, faults: scripted.filter { !$0.perSession }.map(\.fault),
                sessionFaults: scripted.filter(\.perSession).map(\.fault), firmware: firmware),
            channels: channels, watchdogMs: watchdogMs)
        device.silentAfterStimulatedS = silentAfter

        var name = [CChar](repeating: 0, count: 256)
        let master = spectra_open_pseudo_terminal(&name, UInt(name.count))
        guard master >= 0 else { throw EmulatorError("cannot make a pseudo-terminal: \(String(cString: strerror(errno)))") }
        let path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // Hold the terminal side open in raw mode, so the line discipline never touches a byte
        // and the agent can close and reopen it.
        let terminal = open(path, O_RDWR | O_NOCTTY)
        guard terminal >= 0 else { throw EmulatorError("cannot open \(path): \(String(cString: strerror(errno)))") }
        if let problem = SerialPort.makeRaw(terminal) { throw EmulatorError("cannot make \(path) raw: \(problem)") }
        if let link {
            unlink(link)
            guard symlink(path, link) == 0 else { throw EmulatorError("cannot link \(link) to \(path): \(String(cString: strerror(errno)))") }
        }
        signal(SIGTERM) { _ in stopRequested = 1 }
        signal(SIGINT) { _ in stopRequested = 1 }
        signal(SIGPIPE, SIG_IGN)
        say(path)

        var decoder = LinkFrameDecoder()
        var sent = 0, damaged = 0, received = 0
        let clock = ContinuousClock()
        let started = clock.now
        func now() -> Double {
            let elapsed = clock.now - started
            return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        }
        while stopRequested == 0 {
            if let line = device.tick(now: now()) { say(line) }
            switch SerialPort.read(master, timeoutMilliseconds: 20) {
            case .timeout, .closed:
                // The agent has no open descriptor right now (EIO on the master): wait for it.
                continue
            case .bytes(let bytes):
                for frame in decoder.feed(bytes) {
                    received += 1
                    let wasStopped = device.watchdogStopped
                    for reply in device.handle(frame, now: now()) {
                        var wire = LinkFraming.encode(reply)
                        sent += 1
                        if corruptEvery > 0, sent % corruptEvery == 0, wire.count > 2 {
                            wire[wire.count / 2] ^= 0x55
                            if wire[wire.count / 2] == 0 { wire[wire.count / 2] = 0x01 }
                            damaged += 1
                        }
                        _ = SerialPort.writeAll(master, wire)
                    }
                    if frame.type == LinkMessageType.beginSession && !device.watchdogStopped { say("session began") }
                    if wasStopped && !device.watchdogStopped { say("watchdog cleared by a new session") }
                }
            }
        }
        say("stopping: \(received) frames received (\(decoder.corrupted) damaged), \(sent) sent (\(damaged) damaged on purpose)")
        if let link { unlink(link) }
        close(terminal)
        close(master)
    }

    func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

nonisolated(unsafe) private var stopRequested: sig_atomic_t = 0

struct EmulatorError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
