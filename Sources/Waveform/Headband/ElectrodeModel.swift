import Foundation

/// A skin-electrode pair as Rs + (Rp || Cp) behind a current source with a compliance voltage.
///
/// For a rectangular current pulse of amplitude I and width w, the voltage rises as
/// `I * (Rs + Rp * (1 - exp(-t / (Rp * Cp))))`; when that would pass the compliance voltage, the
/// source delivers only what the compliance allows at the end of the phase.
public struct ElectrodeModel: Sendable, Hashable {
    /// Series (gel and skin surface) resistance, ohms.
    public var seriesOhms: Double
    /// Parallel (skin) resistance, ohms.
    public var parallelOhms: Double
    /// Parallel (skin) capacitance, farads.
    public var parallelFarads: Double

    public init(seriesOhms: Double = 1500, parallelOhms: Double = 6500, parallelFarads: Double = 0.5e-6) {
        self.seriesOhms = seriesOhms
        self.parallelOhms = parallelOhms
        self.parallelFarads = parallelFarads
    }

    /// The impedance a phase of `phaseS` seconds sees at its end, ohms.
    public func impedance(phaseS: Double) -> Double {
        let tau = parallelOhms * parallelFarads
        return seriesOhms + parallelOhms * (1 - exp(-phaseS / max(tau, 1e-12)))
    }

    /// Delivers a phase of `microAmps` for `phaseS` through a source of `complianceVolts`.
    /// - Returns: the current delivered, the peak voltage, and whether the source hit compliance.
    public func deliver(microAmps: Double, phaseS: Double, complianceVolts: Double) -> (microAmps: Double, volts: Double, limited: Bool) {
        let ohms = impedance(phaseS: phaseS)
        let volts = abs(microAmps) * 1e-6 * ohms
        if volts <= complianceVolts { return (microAmps, volts, false) }
        let limited = complianceVolts / ohms * 1e6
        return (microAmps < 0 ? -limited : limited, complianceVolts, true)
    }
}
