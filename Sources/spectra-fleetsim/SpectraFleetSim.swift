import ArgumentParser
import FleetSim

@main
struct SpectraFleetSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectra-fleetsim",
        abstract: "Runs many simulated gateways and wearers against a real broker (demo and load tests).",
        discussion: "The simulator is not built yet; this command only describes itself.")
}
