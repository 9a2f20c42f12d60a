import Testing
@testable import Waveform

@Suite("Session engine, safety monitor and simulated headband")
struct SessionTests {
    static func outcome(_ events: [EngineEvent]) -> SessionOutcome? {
        for event in events.reversed() { if case .ended(let outcome) = event { return outcome } }
        return nil
    }

    static func trips(_ events: [EngineEvent]) -> [SafetyViolation] {
        events.compactMap { if case .trip(let violation) = $0 { violation } else { nil } }
    }

    @Test("a clean session stimulates 900 s, ramps, and completes")
    func cleanSession() async throws {
        var runner = try await Profiles.runner(level: 2)
        let (segments, events) = await runner.runToEnd()
        #expect(Self.outcome(events) == .completed)
        #expect(Self.trips(events).isEmpty)
        let total = segments.reduce(0) { $0 + $1.durationS }
        #expect(total <= 900 + 1e-6 && total > 899)
        #expect(runner.engine.totals.stimulatingS == total)
        #expect(segments.first!.startMicroAmps < 20, "starts from near zero")
        #expect(segments.last!.endMicroAmps < 40, "ends ramped down")
        #expect(segments.allSatisfy { $0.peakMicroAmps <= 300 + 1e-9 && $0.vibrationRpm == 0 })
        // Channels take turns: each of the 10 channels got close to 90 s.
        let perChannel = Dictionary(grouping: segments, by: \.channelIndex).mapValues { $0.reduce(0) { $0 + $1.durationS } }
        #expect(perChannel.count == 10)
        #expect(perChannel.values.allSatisfy { $0 > 80 && $0 < 100 })
    }

    @Test("a lift-off mid-pulse pauses through a ramp; 1 s of stable contact resumes with a full ramp from 0")
    func liftOff() async throws {
        var runner = try await Profiles.runner(level: 2, faults: [.liftOff(channel: nil, atS: 30.05, durationS: 3)])
        let (segments, events) = await runner.runToEnd()
        #expect(events.contains(.paused(reason: "contact_lost")))
        #expect(events.contains(.resumed(reason: "contact_lost")))
        #expect(Self.outcome(events) == .completed)
        #expect(runner.engine.totals.pauses == 1)
        // After the pause, output restarts from (near) zero and climbs a ramp step per pair.
        let firstStep = 300.0 / 2 * 0.1  // level 2 peak over a 2 s ramp, one step per 100 ms pair
        let resume = try #require(segments.indices.dropLast().first {
            segments[$0].startS > 30 && segments[$0].startMicroAmps <= firstStep + 1e-6
                && segments[$0 + 1].startMicroAmps > segments[$0].startMicroAmps
        })
        let rising = segments[resume..<(resume + 15)].map(\.startMicroAmps)
        #expect(zip(rising, rising.dropFirst()).allSatisfy { $0 < $1 })
        // Paused time does not count as stimulation: the session still delivered 900 s.
        #expect(abs(runner.engine.totals.stimulatingS - 900) < 0.2)
        #expect(runner.headband.timeS > 903)
    }

    @Test("a short stops the session with a safety trip")
    func short() async throws {
        var runner = try await Profiles.runner(level: 1, faults: [.short(channel: 1, atS: 0)])
        let (_, events) = await runner.runToEnd()
        let trip = try #require(Self.trips(events).first)
        #expect(trip.rule == .short)
        #expect(trip.value < HardLimits.shortOhms)
        #expect(Self.outcome(events) == .aborted(reason: "safety_trip"))
        #expect(runner.engine.totals.stimulatingS < 12)
    }

    @Test("a failing output stage (unequal phases) trips the charge-balance monitor within a second")
    func imbalance() async throws {
        var runner = try await Profiles.runner(level: 3, faults: [.imbalance(atS: 100, fraction: 0.2)])
        let (_, events) = await runner.runToEnd()
        let trip = try #require(Self.trips(events).first)
        #expect([.chargeBalance, .dcMean].contains(trip.rule))
        #expect(Self.outcome(events) == .aborted(reason: "safety_trip"))
        #expect(runner.engine.totals.stimulatingS < 102.5)
    }

    @Test("a stalled vibration motor at level 3 trips after 2 s out of range")
    func motorStall() async throws {
        var runner = try await Profiles.runner(level: 3, faults: [.motorStall(atS: 60, durationS: 30)])
        let (segments, events) = await runner.runToEnd()
        let trip = try #require(Self.trips(events).first)
        #expect(trip.rule == .vibration)
        #expect(runner.headband.timeS > 62 && runner.headband.timeS < 66)
        #expect(segments.filter { $0.level == 3 }.allSatisfy { $0.vibrationRpm == 8000 })
    }

    @Test("vibration runs only while stimulating at level 3")
    func vibrationOnlyAtLevel3() async throws {
        for level in [1, 2] {
            var runner = try await Profiles.runner(level: level)
            let (segments, _) = await runner.runToEnd(limitS: 60)
            #expect(segments.allSatisfy { $0.vibrationRpm == 0 })
        }
    }

    @Test("a flat battery ends the session as battery_low")
    func battery() async throws {
        var runner = try await Profiles.runner(level: 1, faults: [.batteryDrop(atS: 50, pct: 3)])
        let (_, events) = await runner.runToEnd()
        #expect(Self.trips(events).first?.rule == .batteryLow)
        #expect(Self.outcome(events) == .aborted(reason: "battery_low"))
    }

    @Test("a lost headband link ends the session as headband_lost")
    func headbandLost() async throws {
        var runner = try await Profiles.runner(level: 1, faults: [.disconnect(atS: 20)])
        let (_, events) = await runner.runToEnd()
        #expect(Self.outcome(events) == .aborted(reason: "headband_lost"))
    }

    @Test("NaN readings trip the monitor and end the session, never crash")
    func nanReadings() async throws {
        var runner = try await Profiles.runner(level: 2, faults: [.invalidReadings(atS: 40)])
        let (_, events) = await runner.runToEnd()
        #expect(Self.trips(events).first?.rule == .invalidMeasurement)
        #expect(Self.outcome(events) == .aborted(reason: "safety_trip"))
    }

    @Test("hostile measurements fed straight to the engine: NaN, negative, infinite")
    func hostileMeasurements() async throws {
        for bad in [Double.nan, -5, .infinity, -.infinity] {
            var engine = try SessionEngine(profile: Profiles.standard, level: 1, completedSessions: 0)
            _ = engine.nextSegment(nowS: 0)
            engine.consume([PulseReport(
                channelIndex: 0, timeS: 0, firstPhaseMicroAmps: 10, secondPhaseMicroAmps: -10, phaseS: 0.02, periodS: 0.1,
                peakVolts: 1, impedanceOhms: bad, atCompliance: false)])
            #expect(engine.takeEvents().contains { if case .trip(let v) = $0 { v.rule == .invalidMeasurement } else { false } })
            engine.consume(HeadbandStatus(timeS: 1, batteryPct: bad, vibrationRpm: 0, temperatureC: 30, contactImpedanceOhms: bad))
            while engine.nextSegment(nowS: 2) != nil {}
            #expect(engine.isEnded)
        }
        // A report for a channel that does not exist.
        var monitor = try SafetyMonitor(profile: Profiles.standard)
        #expect(monitor.observe(PulseReport(
            channelIndex: 99, timeS: 0, firstPhaseMicroAmps: 1, secondPhaseMicroAmps: -1, phaseS: 0.02, periodS: 0.1,
            peakVolts: 0, impedanceOhms: 5000, atCompliance: false))?.rule == .forbiddenChannel)
    }

    @Test("a level change every 100 ms never exceeds the table and only moves through ramps")
    func levelChurn() async throws {
        var runner = try await Profiles.runner(level: 1)
        var requested = 1
        var segments: [Segment] = []
        var changes = 0
        while !runner.engine.isEnded && runner.headband.timeS < 1000 {
            requested = requested % 3 + 1
            runner.engine.requestLevel(requested)
            if case .stimulated(let segment) = await runner.step() { segments.append(segment) }
            let events = runner.engine.takeEvents()
            changes += events.filter { if case .levelChanged = $0 { true } else { false } }.count
            if let trip = Self.trips(events).first { Issue.record("tripped: \(trip) at \(runner.headband.timeS)") }
        }
        #expect(changes > 1000)
        #expect(runner.engine.phase == .ended(.completed), "churn alone is not a fault")
        var previous = 0.0
        for segment in segments {
            let table = Profiles.standard.setting(for: segment.level)!.peakMicroAmps
            #expect(segment.peakMicroAmps <= table + 1e-9)
            #expect(abs(segment.startMicroAmps - previous) <= 400 / 1.0 * 0.1 + 1e-9)
            previous = segment.endMicroAmps
        }
        #expect(runner.engine.totals.stimulatingS <= 900 + 1e-9)
    }

    @Test("the wall clock jumping an hour forward and back changes nothing: the session stops at 900 s")
    func clockJumps() async throws {
        var engine = try SessionEngine(profile: Profiles.standard, level: 2, completedSessions: 100)
        var headband = SimulatedHeadband(channels: 10, seed: 3)
        var wall = 1_800_000_000.0
        var stimulated = 0.0
        var step = 0
        while let segment = engine.nextSegment(nowS: wall) {
            step += 1
            if step == 2000 { wall += 3600 }
            if step == 4000 { wall -= 7200 }
            engine.consume(headband.execute(segment))
            stimulated += segment.durationS
            wall += segment.durationS
        }
        #expect(stimulated <= 900 + 1e-9)
        #expect(stimulated > 899)
        #expect(engine.phase == .ended(.completed))
    }

    @Test("the headband's own watchdog stops pulses past the session limit")
    func watchdog() async {
        var headband = SimulatedHeadband(channels: 1, watchdogS: 1)
        let segment = Segment(
            channelIndex: 0, channelID: "c", startS: 0, pairs: 30, frequencyHz: 10, phaseWidthMicros: 20_000,
            startMicroAmps: 100, stepMicroAmps: 0, leadingPositive: true, vibrationRpm: 0, level: 1)
        #expect(headband.execute(segment).count == 10)
    }

    @Test("the monitor refuses segments that break a rule, whatever the planner says")
    func monitorRefuses() async throws {
        func segment(_ change: (inout Segment) -> Void) -> Segment {
            var s = Segment(
                channelIndex: 0, channelID: Profiles.standard.channels[0].id, startS: 0, pairs: 1, frequencyHz: 10,
                phaseWidthMicros: 20_000, startMicroAmps: 10, stepMicroAmps: 0, leadingPositive: true, vibrationRpm: 0, level: 1)
            change(&s)
            return s
        }
        let cases: [(Segment, SafetyRule)] = [
            (segment { $0.startMicroAmps = 1500 }, .peakCurrent),
            (segment { $0.startMicroAmps = 150 }, .peakCurrent),  // a jump, not a ramp step
            (segment { $0.level = 1; $0.startMicroAmps = 10; $0.stepMicroAmps = 300; $0.pairs = 2 }, .peakCurrent),
            (segment { $0.channelIndex = 42 }, .forbiddenChannel),
            (segment { $0.channelID = "depressor" }, .forbiddenChannel),
            (segment { $0.frequencyHz = 400 }, .waveformShape),
            (segment { $0.phaseWidthMicros = 80_000 }, .waveformShape),
            (segment { $0.pairs = 9100 }, .sessionLimit),
            (segment { $0.vibrationRpm = 8000 }, .vibration),
        ]
        for (bad, rule) in cases {
            var monitor = try SafetyMonitor(profile: Profiles.standard)
            #expect(monitor.check(bad)?.rule == rule, "\(bad)")
        }
        var monitor = try SafetyMonitor(profile: Profiles.standard)
        #expect(monitor.check(segment { $0.startS = 5 }) == nil)
        #expect(monitor.check(segment { $0.startS = 4 })?.rule == .singleChannel, "overlaps what was sent")
    }

    @Test("gel drying: delivered current stays at the level while the compliance allows, and output adapts within it")
    func drying() async throws {
        var profile = Profiles.standard
        profile.complianceVolts = 4
        var runner = try await Profiles.runner(level: 3, profile: profile)
        var band = try #require(runner.headband as? SimulatedHeadband)
        band.dryingPerMinute = 0.2
        runner.headband = band
        let (segments, events) = await runner.runToEnd()
        #expect(Self.outcome(events) == .completed)
        let late = segments.filter { $0.startS > 600 }
        #expect(late.contains { $0.peakMicroAmps < 399 }, "adapted below the level as impedance grew")
        #expect(late.allSatisfy { $0.peakMicroAmps <= 400 })
    }

    @Test("the same seed gives the same session")
    func deterministic() async throws {
        var first = try await Profiles.runner(level: 2, faults: [.liftOff(channel: 2, atS: 40, durationS: 2)], seed: 11)
        var second = try await Profiles.runner(level: 2, faults: [.liftOff(channel: 2, atS: 40, durationS: 2)], seed: 11)
        #expect(await first.runToEnd().segments == second.runToEnd().segments)
    }

    @Test("lowering the remote cap mid-session ramps down to the new level at once")
    func capMidSession() async throws {
        var runner = try await Profiles.runner(level: 3)
        for _ in 0..<100 { _ = await runner.step() }
        runner.engine.setMaxLevel(1)
        var levels: [Int] = []
        var peaks: [Double] = []
        for _ in 0..<40 {
            if case .stimulated(let segment) = await runner.step() {
                levels.append(segment.level)
                peaks.append(segment.peakMicroAmps)
            }
        }
        #expect(peaks.first! > 200, "ramps down, no jump")
        #expect(zip(peaks, peaks.dropFirst()).prefix(5).allSatisfy { $0 > $1 })
        #expect(peaks.last! <= 200 + 1e-9)
        #expect(levels.last == 1)
        #expect(zip(peaks, levels).allSatisfy { $0 <= Profiles.standard.setting(for: $1)!.peakMicroAmps + 1e-9 })
        #expect(runner.engine.takeEvents().contains(.levelChanged(from: 3, to: 1)))
    }
}

@Suite("The headband's button")
struct ButtonTests {
    @Test("a short press steps the level up (within what is unlocked); a long press stops as user_stop")
    func buttons() async throws {
        var runner = try await Profiles.runner(level: 1, faults: [.button(atS: 20, .short), .button(atS: 40, .long)], completed: 7)
        let (segments, events) = await runner.runToEnd()
        #expect(events.contains(.levelChanged(from: 1, to: 2)))
        #expect(segments.allSatisfy { $0.level <= 2 }, "level 3 is still locked after 7 sessions")
        #expect(events.last == .ended(.aborted(reason: "user_stop")))
        #expect(runner.engine.totals.stimulatingS < 42)
    }
}
