import ArgumentParser
import Foundation
import NewsdDaemon
import NewsdDevTools
import NewsdDistill
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// The `newsd` command line: the daemon and its tools.
@main
struct Newsd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "newsd",
        abstract: "Financial-news sentiment daemon with a self-improving student model.",
        subcommands: [RunCommand.self, CheckConfigCommand.self, MigrateCommand.self, DevBrokerCommand.self, ProduceCommand.self,
                      DemoDataCommand.self, TrainCommand.self, EvalCommand.self, ClassifyCommand.self, BenchCommand.self,
                      DevTeacherCommand.self, LabelCommand.self, TeacherCommand.self,
                      ModelsCommand.self, LabelsCommand.self, TrainerCommand.self, RescoreCommand.self,
                      AlertsCommand.self, ReportCommand.self, AnalystsCommand.self])

    /// Gives OpenBLAS the kernels the CPU's flags allow (re-executing once if it chose weaker
    /// ones), then runs the command as ArgumentParser's own `main` does.
    static func main() async {
        BLASCore.ensurePreferredKernels()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand { try await asyncCommand.run() } else { try command.run() }
        } catch {
            exit(withError: error)
        }
    }
}

/// Where the base checkpoint is when no flag says: `NEWSD_BASE_MODEL_DIR`, else the project's
/// `.models/all-MiniLM-L6-v2` (where `scripts/install-model.sh` puts it).
func defaultBaseModelDirectory() -> String {
    ProcessInfo.processInfo.environment["NEWSD_BASE_MODEL_DIR"] ?? ".models/all-MiniLM-L6-v2"
}

/// Prints to standard error.
func note(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// One line of JSON for an `Encodable` value (sorted keys).
func jsonLine<T: Encodable>(_ value: T) -> String { (try? JSONText.encode(value)) ?? "{}" }

/// Rounds for display and JSON.
func rounded(_ x: Double, _ digits: Int = 4) -> Double {
    let p = pow(10.0, Double(digits))
    return (x * p).rounded() / p
}
