/// A fault the simulated headband plays at a time on its own clock.
public enum HeadbandFault: Sendable, Hashable {
    /// The electrodes of `channel` (nil: all) lift off the skin for `durationS`.
    case liftOff(channel: Int?, atS: Double, durationS: Double)
    /// The electrodes of `channel` short together from `atS` on.
    case short(channel: Int, atS: Double)
    /// The battery drops to `pct` at `atS`.
    case batteryDrop(atS: Double, pct: Double)
    /// The vibration motor stalls for `durationS`.
    case motorStall(atS: Double, durationS: Double)
    /// A button press at `atS`.
    case button(atS: Double, ButtonPress)
    /// The headband link drops at `atS`.
    case disconnect(atS: Double)
    /// The headband reports NaN readings at `atS`.
    case invalidReadings(atS: Double)
    /// Negative phases fall short by `fraction` from `atS` on (a failing output stage).
    case imbalance(atS: Double, fraction: Double)
    /// Firmware installs from `atS` on fail their boot check (and roll back).
    case firmwareFailure(atS: Double)
}

/// The headband the gateway talks to, simulated: per-channel Rs + (Rp || Cp) electrodes behind
/// a current source with a compliance voltage, measurement noise, gel that dries over a
/// session, an ERM vibration motor with spin-up, a battery and a button, and scripted faults.
/// The same seed and script give the same readings.
public struct SimulatedHeadband: Sendable {
    /// The headband's own clock, seconds.
    public private(set) var timeS: Double = 0
    public private(set) var batteryPct: Double
    public private(set) var vibrationRpm: Double = 0
    /// The headband's own session watchdog (rule 6): no pulse past this much stimulation.
    public var watchdogS: Double
    /// Stimulation delivered since ``beginSession()``, seconds.
    public private(set) var stimulatedS: Double = 0
    public var firmware: String
    public private(set) var connected = true

    private let complianceVolts: Double
    private var electrodes: [ElectrodeModel]
    private var faults: [HeadbandFault]
    /// Faults timed from each session's start, added to `faults` when a session begins.
    private let sessionFaults: [HeadbandFault]
    private var random: SeededRandom
    private var pendingButtons: [ButtonPress] = []
    private var firedButtons: Set<Int> = []
    /// Relative growth of the electrode resistances per minute of stimulation (drying gel).
    public var dryingPerMinute: Double
    /// Relative deviation of the delivered amplitude (common to both phases of a pair).
    public var noise: Double

    /// Creates a headband for `channels` electrode pairs. `faults` play once, on the headband's
    /// clock; `sessionFaults` play in every session, timed from its start.
    public init(
        channels: Int, complianceVolts: Double = 11, seed: UInt64 = 1, faults: [HeadbandFault] = [], sessionFaults: [HeadbandFault] = [],
        batteryPct: Double = 90, firmware: String = "2.4.0", watchdogS: Double = HardLimits.maxSessionSeconds,
        dryingPerMinute: Double = 0.04, noise: Double = 0.005
    ) {
        var random = SeededRandom(seed: seed)
        self.electrodes = (0..<channels).map { _ in
            ElectrodeModel(
                seriesOhms: Double.random(in: 1200...1800, using: &random),
                parallelOhms: Double.random(in: 5000...8000, using: &random),
                parallelFarads: Double.random(in: 0.3e-6...0.7e-6, using: &random))
        }
        self.random = random
        self.complianceVolts = complianceVolts
        self.faults = faults
        self.sessionFaults = sessionFaults
        self.batteryPct = batteryPct
        self.firmware = firmware
        self.watchdogS = min(watchdogS, HardLimits.maxSessionSeconds)
        self.dryingPerMinute = dryingPerMinute
        self.noise = noise
    }

    /// Installs a firmware image: takes it in 4 KiB chunks, reboots, and reports the new version,
    /// or rolls back to the running version when the boot check fails.
    /// - Returns: whether the new version runs.
    public mutating func installFirmware(_ image: [UInt8], version: String) -> Bool {
        guard connected, !image.isEmpty else { return false }
        var received = 0
        while received < image.count {
            received += min(4096, image.count - received)
            idle(0.01)
        }
        idle(2)  // reboot
        let fails = faults.contains { if case .firmwareFailure(let at) = $0 { timeS >= at } else { false } }
        guard !fails else { return false }
        firmware = version
        return true
    }

    /// The simulated headband's identity: as many channels as it was made with.
    public var capabilities: HeadbandCapabilities? {
        HeadbandCapabilities(
            model: "Spectra Sculpt (simulated)", hardware: "sculpt-hb-rev3", firmware: firmware, channels: electrodes.count,
            maxMicroAmps: HardLimits.maxPeakMicroAmps)
    }

    /// Adds faults to the script.
    public mutating func script(_ more: [HeadbandFault]) { faults += more }

    /// Starts a new session: its watchdog count, and the faults scripted per session from now.
    public mutating func beginSession() {
        stimulatedS = 0
        faults += sessionFaults.map { $0.shifted(by: timeS) }
    }

    /// Executes a segment: advances the clock by its duration and reports each pulse pair.
    /// Pulses past the watchdog are not delivered (an empty tail).
    public mutating func execute(_ segment: Segment) -> [PulseReport] {
        guard connected else { return [] }
        var reports: [PulseReport] = []
        reports.reserveCapacity(segment.pairs)
        let period = segment.periodS
        let phase = segment.phaseS
        for pair in 0..<segment.pairs {
            advance(by: 0, motorTarget: segment.vibrationRpm)
            guard connected else { break }
            guard stimulatedS + period <= watchdogS + 1e-9 else { break }
            let channel = segment.channelIndex
            let model = effectiveModel(channel)
            let sign: Double = segment.leadsPositive(pair: pair) ? 1 : -1
            let gain = 1 + random.gaussian(deviation: noise)
            let commanded = segment.amplitude(pair: pair) * gain
            var first = model.deliver(microAmps: sign * commanded, phaseS: phase, complianceVolts: complianceVolts)
            var second = model.deliver(microAmps: -sign * commanded, phaseS: phase, complianceVolts: complianceVolts)
            if let fraction = activeImbalance() {
                // One output stage (the negative one) grows weak.
                if first.microAmps < 0 { first.microAmps *= (1 - fraction) } else { second.microAmps *= (1 - fraction) }
            }
            var report = PulseReport(
                channelIndex: channel, timeS: timeS, firstPhaseMicroAmps: first.microAmps,
                secondPhaseMicroAmps: second.microAmps, phaseS: phase, periodS: period, peakVolts: max(first.volts, second.volts),
                impedanceOhms: model.impedance(phaseS: phase), atCompliance: first.limited || second.limited)
            if invalidNow() {
                report.impedanceOhms = .nan
                report.firstPhaseMicroAmps = .nan
            }
            reports.append(report)
            stimulatedS += period
            advance(by: period, motorTarget: segment.vibrationRpm)
            batteryPct = max(0, batteryPct - 0.02 * period)
        }
        return reports
    }

    /// Lets `seconds` pass without stimulation (the motor spins down).
    public mutating func idle(_ seconds: Double) {
        var left = seconds
        while left > 0 {
            let step = min(left, 0.05)
            advance(by: step, motorTarget: 0)
            batteryPct = max(0, batteryPct - 0.0005 * step)
            left -= step
        }
    }

    /// The status now; button presses are reported once.
    public mutating func status(channel: Int) -> HeadbandStatus {
        let buttons = pendingButtons
        pendingButtons.removeAll()
        let contact = invalidNow() ? .nan : effectiveModel(channel).impedance(phaseS: 0.001) * (1 + random.gaussian(deviation: 0.01))
        return HeadbandStatus(
            timeS: timeS, batteryPct: batteryPct, vibrationRpm: vibrationRpm,
            temperatureC: 31 + min(3, stimulatedS / 300), contactImpedanceOhms: contact, buttons: buttons,
            connected: connected, firmware: firmware)
    }

    // MARK: Physics and script

    private mutating func advance(by seconds: Double, motorTarget: Double) {
        timeS += seconds
        for (index, fault) in faults.enumerated() {
            switch fault {
            case .batteryDrop(let at, let pct) where timeS >= at: batteryPct = min(batteryPct, pct)
            case .button(let at, let press) where timeS >= at && !firedButtons.contains(index):
                firedButtons.insert(index)
                pendingButtons.append(press)
            case .disconnect(let at) where timeS >= at: connected = false
            default: break
            }
        }
        // ERM motor: first-order spin-up / spin-down, tau 0.15 s.
        let target = motorStalled() ? 0 : motorTarget
        if seconds > 0 {
            let alpha = 1 - _exp(-seconds / 0.15)
            vibrationRpm += (target - vibrationRpm) * alpha
        } else if target == 0 && vibrationRpm < 50 {
            vibrationRpm = 0
        }
    }

    private func effectiveModel(_ channel: Int) -> ElectrodeModel {
        var model = electrodes[min(max(channel, 0), electrodes.count - 1)]
        let drying = 1 + dryingPerMinute * stimulatedS / 60
        model.seriesOhms *= drying
        model.parallelOhms *= drying
        for fault in faults {
            switch fault {
            case .liftOff(let target, let at, let duration) where (target == nil || target == channel) && timeS >= at && timeS < at + duration:
                model.seriesOhms = 2_000_000
            case .short(let target, let at) where target == channel && timeS >= at:
                model.seriesOhms = 40
                model.parallelOhms = 20
            default: break
            }
        }
        return model
    }

    private func motorStalled() -> Bool {
        faults.contains { if case .motorStall(let at, let duration) = $0 { timeS >= at && timeS < at + duration } else { false } }
    }

    private func invalidNow() -> Bool {
        faults.contains { if case .invalidReadings(let at) = $0 { timeS >= at && timeS < at + 0.5 } else { false } }
    }

    private func activeImbalance() -> Double? {
        for fault in faults { if case .imbalance(let at, let fraction) = fault, timeS >= at { return fraction } }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
private func _exp(_ x: Double) -> Double { Glibc.exp(x) }
#else
import Foundation
private func _exp(_ x: Double) -> Double { Foundation.exp(x) }
#endif
