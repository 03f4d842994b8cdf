import ArgumentParser
import Foundation
import Logging
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
import ServiceLifecycle

/// `newsd models ...`: the registry.
struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "models", abstract: "Model registry: list, show, promote, roll back.",
                                                    subcommands: [List.self, Show.self, Promote.self, Rollback.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every version, newest first.")
        @Option(help: "Configuration file.") var config: String?
        func run() throws {
            let models = try Daemon.withDatabase(try loadConfiguration(config, requireModel: false)) { try ModelRegistry.list($0) }
            var rows = [["seq", "version", "status", "parent", "created", "val macro-F1", "val neg recall", "labels", "reasons"]]
            for m in models {
                let metrics = (try? JSONText.decode([String: Double].self, from: m.metrics)) ?? [:]
                let counts = (try? JSONText.decode([String: Int].self, from: m.labelCounts)) ?? [:]
                rows.append(["v\(m.seq)", m.version, m.status, m.parent ?? "-", String(m.createdAt.prefix(19)),
                             metrics["validation_macro_f1"].map { String(format: "%.4f", $0) } ?? "-",
                             metrics["validation_recall_negative"].map { String(format: "%.4f", $0) } ?? "-",
                             String(counts.filter { $0.key != "validation" }.values.reduce(0, +)), m.reasons ?? ""])
            }
            print(formatTable(rows))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One version: lineage, label counts, training configuration, metrics.")
        @Option(help: "Configuration file.") var config: String?
        @Argument(help: "Version (checksum prefix, vN or N).") var version: String
        func run() throws {
            guard let m = try Daemon.withDatabase(try loadConfiguration(config, requireModel: false), { try ModelRegistry.get($0, version) }) else {
                throw ValidationError("no model \(version)")
            }
            print("v\(m.seq) \(m.version) \(m.status); parent \(m.parent ?? "-"); created \(m.createdAt); activated \(m.activatedAt ?? "-")")
            if let r = m.reasons { print("reasons: \(r)") }
            print("labels: \(m.labelCounts)\ntraining: \(m.training)\nmetrics: \(m.metrics)")
        }
    }

    struct Promote: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a version active on every host (bypasses the gate).")
        @Option(help: "Configuration file.") var config: String?
        @Argument(help: "Version (checksum prefix, vN or N).") var version: String
        func run() throws {
            let v = try Daemon.withDatabase(try loadConfiguration(config, requireModel: false)) { db -> String in
                guard let m = try ModelRegistry.get(db, version) else { throw ValidationError("no model \(version)") }
                try ModelRegistry.promote(db, m.version)
                return "v\(m.seq) \(m.version)"
            }
            print("\(v) is active; hosts swap it in between batches")
        }
    }

    struct Rollback: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make the previously active version active again on every host.")
        @Option(help: "Configuration file.") var config: String?
        func run() throws {
            let v = try Daemon.withDatabase(try loadConfiguration(config, requireModel: false)) { try ModelRegistry.rollback($0) }
            print("\(v) is active again")
        }
    }
}

/// `newsd labels import`: human or gold labels, which win over the teacher's.
struct LabelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "labels", abstract: "Imported (human or gold) labels.", subcommands: [Import.self])

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "import", abstract: "Import labels from a CSV; they take precedence over the teacher's.")
        @Option(help: "Configuration file.") var config: String?
        @Argument(help: "CSV file.") var file: String
        @Option(help: "Text column.") var textColumn = "text"
        @Option(help: "Label column.") var labelColumn = "label"
        @Option(help: "Source recorded with the labels.") var source = "import"
        func run() throws {
            let cfg = try loadConfiguration(config, requireModel: false)
            let table = try CSVTable(contentsOf: URL(fileURLWithPath: file))
            let texts = try table.values(textColumn), labels = try table.values(labelColumn)
            let allowed = Set(cfg.teacher.labels.map { $0.lowercased() })
            var data = "", skipped = 0
            for (t, l) in zip(texts, labels) {
                let label = l.trimmingCharacters(in: .whitespaces).lowercased()
                guard allowed.contains(label), !t.isEmpty else { skipped += 1; continue }
                data += CopyText.row([teacherTextHash(t), t, label, source])
            }
            let n = try Daemon.withDatabase(cfg) { db -> Int in
                _ = try Schema.migrate(db)
                return try db.transaction {
                    try db.execute("CREATE TEMP TABLE label_stage (text_hash text, text text, label text, source text) ON COMMIT DROP")
                    try db.copyIn("COPY label_stage FROM STDIN", data: data)
                    return try db.execute("""
                        INSERT INTO imported_labels (text_hash, text, label, source)
                        SELECT DISTINCT ON (text_hash) text_hash, text, label, source FROM label_stage ORDER BY text_hash
                        ON CONFLICT (text_hash) DO UPDATE SET label = EXCLUDED.label, source = EXCLUDED.source, imported_at = now()
                        """).affected
                }
            }
            print("imported \(n) labels (\(skipped) rows skipped: empty text or a label not in \(allowed.sorted()))")
        }
    }
}

/// `newsd trainer`: the distillation loop as its own service (trainer.mode = separate), or once.
struct TrainerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "trainer", abstract: "Retrain, evaluate and promote students (a service, or --once).")
    @Option(help: "Configuration file.") var config: String?
    @Flag(help: "One check and exit (status 0 promoted or skipped, 4 rejected).") var once = false
    @Flag(help: "Train now, whatever the thresholds.") var force = false
    @Flag(help: "Train on shuffled labels (demonstrates the gate refusing a worse model).") var shuffleLabels = false

    func run() async throws {
        let cfg = try loadConfiguration(config)
        let logger = bootstrapLogging(cfg.log, secretsOf: cfg)
        if let warning = BLASCore.weakerKernelsWarning { logger.warning("\(warning)") }
        try Daemon.withDatabase(cfg) { _ = try Schema.migrate($0) }
        if once || force || shuffleLabels {
            switch try Distiller.runOnce(cfg, logger: logger, force: force, shuffleLabels: shuffleLabels) {
            case let .skipped(why): print("skipped: \(why)")
            case let .promoted(m): print("promoted v\(m.seq) \(m.version)")
            case let .rejected(m, why): print("rejected v\(m.seq) \(m.version): \(why)"); throw ExitCode(4)
            }
            return
        }
        let group = ServiceGroup(configuration: .init(services: [.init(service: TrainerService(configuration: cfg, logger: logger))],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// `newsd rescore --since TIME`: classify past items again with the active model.
struct RescoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rescore", abstract: "Classify past items again with the active model, keeping earlier predictions.")
    @Option(help: "Configuration file.") var config: String?
    @Option(help: "Items published (or received) since this time: ISO 8601 (2026-11-24T00:00:00Z or 2026-11-24) or a duration ago (90m, 24h, 7d).") var since: String

    func run() throws {
        let cfg = try loadConfiguration(config, requireModel: false)
        guard let date = Self.parse(since) else { throw ValidationError("--since \(since): expected ISO 8601 or a duration like 24h") }
        let n = try Daemon.withDatabase(cfg) { db -> (Int, String) in
            guard let active = try ModelRegistry.active(db) else { throw ValidationError("no active model in the registry") }
            let model = try ModelWatcher.load(db, version: active.version, configuration: cfg)
            return (try Rescorer.rescore(db, model: model, selection: .since(date)) { note("rescored \($0)") }, "v\(active.seq) \(active.version)")
        }
        print("added \(n.0) predictions by \(n.1) for items since \(date)")
    }

    static func parse(_ s: String) -> Date? {
        if let unit = s.last, let n = Double(s.dropLast()), let scale = ["s": 1.0, "m": 60, "h": 3600, "d": 86_400][String(unit)] {
            return Date().addingTimeInterval(-n * scale)
        }
        let f = ISO8601DateFormatter()
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withFullDate]
        return f.date(from: s)
    }
}
