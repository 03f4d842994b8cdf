import ArgumentParser
import Foundation
import NewsdAlerts
import NewsdDaemon
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// `newsd alerts ...`: negative-shift alerts.
struct AlertsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "alerts", abstract: "Negative-shift alerts: list, acknowledge, explain, backtest.",
                                                    subcommands: [List.self, Ack.self, Explain.self, BacktestCommand.self])

    static func since(_ text: String) throws -> Date {
        guard let s = CompanyReport.parseSpan(text) else { throw ValidationError("--since \(text): expected a span like 30d, 12h or 90m") }
        return Date().addingTimeInterval(-s)
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Alerts raised in a period, newest first.")
        @Option(help: "Configuration file.") var config: String?
        @Option(help: "Period: 30d, 12h, 90m.") var since = "7d"
        @Option(help: "Only this company.") var company: String?
        @Option(help: "Only this state: verifying, firing, resolved, suppressed.") var state: String?
        func run() throws {
            let from = try AlertsCommand.since(since)
            let alerts = try Daemon.withDatabase(try loadConfiguration(config, requireModel: false)) { try AlertStore.list($0, since: from, company: company, state: state) }
            var rows = [["id", "raised (UTC)", "company", "rule", "severity", "state", "verification", "observed", "baseline", "items", "p", "acked"]]
            for a in alerts {
                rows.append([String(a.id), String(AlertPayloads.iso(a.raisedAt).prefix(19)), a.companyID, a.rule, a.severity, a.state, a.verification,
                             String(format: "%.3f", a.observedShare), String(format: "%.3f", a.baselineShare), String(a.windowItems),
                             String(format: "%.2g", a.pValue), a.ackedAt == nil ? "" : "yes"])
            }
            print(formatTable(rows))
        }
    }

    struct Ack: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Acknowledge an alert.")
        @Option(help: "Configuration file.") var config: String?
        @Option(help: "Who acknowledges (default: $USER).") var by: String?
        @Argument(help: "Alert id.") var id: Int64
        func run() throws {
            let who = by ?? ProcessInfo.processInfo.environment["USER"] ?? "unknown"
            guard try Daemon.withDatabase(try loadConfiguration(config, requireModel: false), { try AlertStore.acknowledge($0, id: id, by: who) }) else {
                throw ValidationError("no alert \(id)")
            }
            print("alert \(id) acknowledged by \(who)")
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Why an alert fired: the window's counts, the score, the driver sentences.")
        @Option(help: "Configuration file.") var config: String?
        @Argument(help: "Alert id.") var id: Int64
        func run() throws {
            let (alert, drivers, counts) = try Daemon.withDatabase(try loadConfiguration(config, requireModel: false)) { db -> (AlertRecord?, [AlertDriver], [(String, Int)]) in
                guard let a = try AlertStore.alert(db, id: id) else { return (nil, [], []) }
                let counts = try db.query("""
                    SELECT label, count(*) AS n FROM company_sentences
                    WHERE company_id = \(a.companyID) AND published_at > \(a.windowStart) AND published_at <= \(a.windowEnd)
                    GROUP BY label ORDER BY label
                    """).typed.map { (try $0.decode("label", as: String.self), try $0.decode("n", as: Int.self)) }
                return (a, try AlertStore.drivers(db, alert: id), counts)
            }
            guard let a = alert else { throw ValidationError("no alert \(id)") }
            print("alert \(a.id): \(a.companyName.map { "\($0) (\(a.companyID))" } ?? a.companyID), rule \(a.rule), \(a.severity), \(a.state)")
            print("raised \(AlertPayloads.iso(a.raisedAt))" + (a.resolvedAt.map { ", ended \(AlertPayloads.iso($0))" } ?? "") + (a.ackedAt.map { ", acknowledged \(AlertPayloads.iso($0))" } ?? ""))
            print("window \(AlertPayloads.iso(a.windowStart)) .. \(AlertPayloads.iso(a.windowEnd))")
            print("  predictions in the window: \(a.windowItems) (weight \(String(format: "%.1f", a.windowWeight)))")
            print("  by label (effective predictions now): " + counts.map { "\($0.0) \($0.1)" }.joined(separator: ", "))
            print(String(format: "  negative share %.3f against baseline %.3f; Beta-Binomial tail p = %.3g", a.observedShare, a.baselineShare, a.pValue))
            print("  teacher verification: \(a.verification) (checked \(a.driversChecked), confirmed \(a.driversConfirmed), contradicted \(a.driversContradicted))")
            var rows = [["rank", "published (UTC)", "student", "P(neg)", "model", "teacher", "sentence"]]
            for d in drivers {
                rows.append([String(d.rank), String(AlertPayloads.iso(d.publishedAt).prefix(19)), d.studentLabel, String(format: "%.2f", d.negativeProbability),
                             String(d.modelVersion.prefix(12)), d.teacherLabel ?? (d.teacherStatus ?? "-"), String(d.text.prefix(100))])
            }
            print(formatTable(rows))
        }
    }

    struct BacktestCommand: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "backtest",
            abstract: "Replay stored predictions through the detector with the current parameters; print what would have fired.")
        @Option(help: "Configuration file ([alerts.detector], [alerts.companies.*]).") var config: String?
        @Option(help: "Period replayed: 30d, 12h, 90m.") var since = "30d"
        func run() throws {
            let c = try loadConfiguration(config, requireModel: false)
            let from = try AlertsCommand.since(since).timeIntervalSince1970, now = Date().timeIntervalSince1970
            // The history before the period warms the baselines up.
            let warm = min(4 * c.alerts.detector.baselineHalfLifeHours * 3600, 21 * 86_400)
            let events = try Daemon.withDatabase(c) { try Backtest.events($0, from: from - warm, until: now) }
            let fired = Backtest.run(events, parameters: c.alerts.detector, overrides: c.alerts.companies, countFrom: from, until: now)
            let companies = Set(events.filter { $0.time >= from }.map(\.company)).count
            var rows = [["raised (UTC)", "company", "rule", "severity", "observed", "baseline", "items", "p", "ended (UTC)"]]
            for f in fired {
                rows.append([String(AlertPayloads.iso(Date(timeIntervalSince1970: f.raisedAt)).prefix(16)), f.company, f.rule, f.severity,
                             String(format: "%.3f", f.figures.observedShare), String(format: "%.3f", f.figures.baselineShare), String(f.figures.items),
                             String(format: "%.2g", f.figures.pValue), f.resolvedAt.map { String(AlertPayloads.iso(Date(timeIntervalSince1970: $0)).prefix(16)) } ?? "firing"])
            }
            print(formatTable(rows))
            let days = (now - from) / 86_400
            print(String(format: "%d alerts over %d companies in %.1f days (%.4f per company-day; configured false-alert rate %.4f)",
                         fired.count, companies, days, companies > 0 ? Double(fired.count) / (Double(companies) * days) : 0, c.alerts.detector.falseAlertRate))
        }
    }
}

/// `newsd report`: one company's sentiment over a period, for people.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report",
        abstract: "A company's daily net sentiment, volume and alerts: a terminal table, a self-contained HTML page, a PNG.")
    @Option(help: "Configuration file.") var config: String?
    @Option(help: "Company id.") var company: String
    @Option(help: "Period: 30d, 12h.") var since = "30d"
    @Option(help: "Write the HTML page here.") var out: String?
    @Option(help: "Write a PNG screenshot of the page here (headless Chromium).") var png: String?
    @Option(help: "The browser for --png.") var browser = "chromium"

    func run() throws {
        let from = try AlertsCommand.since(since)
        let report = try Daemon.withDatabase(try loadConfiguration(config, requireModel: false)) { try CompanyReport.load($0, company: company, since: from) }
        print(report.table(), terminator: "")
        let html = report.html()
        var page = out
        if let out { try html.write(toFile: out, atomically: true, encoding: .utf8); print("wrote \(out)") }
        if let png {
            if page == nil {
                page = NSTemporaryDirectory() + "newsd-report-\(getpid()).html"
                try html.write(toFile: page!, atomically: true, encoding: .utf8)
            }
            try HeadlessBrowser(executable: browser).screenshot(page: page!, png: png)
            print("wrote \(png)")
        }
    }
}

/// `newsd analysts ...`: the analysts' rollups and documented queries.
struct AnalystsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "analysts", abstract: "Analysts' rollups and queries.",
                                                    subcommands: [Rollup.self, Queries.self])

    struct Rollup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute every hour and day touched since the last pass (newsd run does this every analysts.rollup_seconds).",
            discussion: "With --all, every stored hour is recomputed (after a bulk load with triggers off).")
        @Option(help: "Configuration file.") var config: String?
        @Flag(help: "Recompute every stored hour.") var all = false
        func run() throws {
            let c = try loadConfiguration(config, requireModel: false)
            let (pass, seconds, agreement) = try Daemon.withDatabase(c) { db -> (AnalystRollups.Pass, Double, Double) in
                let started = Date()
                if all {
                    try db.execute("INSERT INTO rollup_dirty_hours SELECT DISTINCT company_id, date_trunc('hour', published_at, 'UTC') FROM mentions")
                }
                let p = try AnalystRollups.pass(db, lowConfidenceMargin: c.analysts.lowConfidenceMargin)
                let rolled = Date()
                try AnalystRollups.refreshAgreement(db)
                return (p, rolled.timeIntervalSince(started), Date().timeIntervalSince(rolled))
            }
            print(String(format: "recomputed %d hours and %d days in %.2f s; model_agreement refreshed in %.2f s", pass.hours, pass.days, seconds, agreement))
        }
    }

    struct Queries: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run and time the example queries of docs/analysts.md.")
        @Option(help: "Configuration file.") var config: String?
        @Option(help: "The Markdown file with the queries.") var docs = "docs/analysts.md"
        @Option(help: "Runs per query (the median is printed).") var runs = 5
        func run() throws {
            let queries = AnalystQueries.parse(markdown: try String(contentsOfFile: docs, encoding: .utf8))
            let results = try Daemon.withDatabase(try loadConfiguration(config, requireModel: false)) { db in
                try queries.map { q in (q, try AnalystQueries.time(db, q, runs: runs)) }
            }
            var rows = [["#", "query", "rows", "median ms"]]
            for (i, (q, r)) in results.enumerated() { rows.append([String(i + 1), q.title, String(r.rows), String(format: "%.1f", r.medianMs)]) }
            print(formatTable(rows))
            print(String(format: "slowest: %.1f ms", results.map(\.1.medianMs).max() ?? 0))
        }
    }
}
