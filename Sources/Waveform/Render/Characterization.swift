/// The output figures regulators ask for (21 CFR 882.5888), per level and resistive load.
public struct Characterization: Sendable, Hashable, Codable {
    public var level: Int
    public var loadOhms: Double
    /// Largest output voltage, volts.
    public var maxVolts: Double
    /// Largest output current, microamps.
    public var maxMicroAmps: Double
    /// Net charge of one pulse pair, microcoulombs (0 for a balanced biphasic pair).
    public var netChargePerPulseMicroCoulombs: Double
    /// Charge of one phase, microcoulombs.
    public var maxPhaseChargeMicroCoulombs: Double
    /// Peak current over the smallest electrode's area, milliamps per cm2.
    public var currentDensityMilliAmpsPerCm2: Double
    /// Mean absolute current, microamps.
    public var averageMicroAmps: Double
    /// Mean power over the smallest electrode's area, milliwatts per cm2.
    public var averagePowerDensityMilliWattsPerCm2: Double

    /// The standard test loads: 500 ohm, 2 kohm, 10 kohm.
    public static let standardLoadsOhms: [Double] = [500, 2000, 10_000]

    /// Figures for every level of `profile` at each load.
    public static func table(for profile: CalibrationProfile, loadsOhms: [Double] = standardLoadsOhms) -> [Characterization] {
        let area = profile.channels.map(\.electrodeAreaCm2).min() ?? 1
        var rows: [Characterization] = []
        for row in profile.levels.sorted(by: { $0.level < $1.level }) {
            for load in loadsOhms {
                let current = min(row.peakMicroAmps, profile.complianceVolts / load * 1e6)
                let volts = current * 1e-6 * load
                let duty = 2 * row.phaseS * row.frequencyHz
                let averageCurrent = current * duty
                let averagePowerMilliWatts = (current * 1e-6) * (current * 1e-6) * load * duty * 1000
                rows.append(Characterization(
                    level: row.level, loadOhms: load, maxVolts: volts, maxMicroAmps: current,
                    netChargePerPulseMicroCoulombs: 0, maxPhaseChargeMicroCoulombs: current * row.phaseS,
                    currentDensityMilliAmpsPerCm2: current / 1000 / area, averageMicroAmps: averageCurrent,
                    averagePowerDensityMilliWattsPerCm2: averagePowerMilliWatts / area))
            }
        }
        return rows
    }
}
