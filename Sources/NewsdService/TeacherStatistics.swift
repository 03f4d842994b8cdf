import Foundation
import NewsdCore
import NewsdPostgres

/// What the ML owner asks about the teacher: calls, tokens, spend, FAIL and ambiguous rates, the
/// queue, and the student's live accuracy measured on the random exploration items (an unbiased
/// estimate, unlike agreement on the uncertain items the teacher mostly sees).
public struct TeacherStatistics: Sendable {
    /// HTTP requests, and of them answered with a completion.
    public var requests = 0, okRequests = 0
    /// Requests by status.
    public var requestsByStatus: [String: Int] = [:]
    /// Tokens reported.
    public var promptTokens = 0, completionTokens = 0
    /// US dollars, in all and today (UTC).
    public var cost = 0.0, costToday = 0.0
    /// Median latency of answered requests, milliseconds.
    public var medianLatencyMs = 0.0
    /// Verdicts.
    public var labelled = 0, ambiguous = 0
    /// Samples, and FAILs among them.
    public var samples = 0, failedSamples = 0
    /// Queue rows by status and by reason.
    public var queueByStatus: [String: Int] = [:], queueByReason: [String: Int] = [:]
    /// News items stored (for rates per million sentences).
    public var newsItems = 0
    /// Per model version: exploration items with a verdict, and how many the student got right.
    public var exploration: [(model: String, items: Int, agreed: Int)] = []

    /// Reads everything from the database.
    public static func read(_ db: PostgresConnection) throws -> TeacherStatistics {
        var s = TeacherStatistics()
        func int(_ v: String??) -> Int { Int((v ?? nil) ?? "0") ?? 0 }
        func double(_ v: String??) -> Double { Double((v ?? nil) ?? "0") ?? 0 }
        let r = try db.execute("""
            SELECT count(*), count(*) FILTER (WHERE status = 'ok'), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
                   coalesce(sum(cost_usd), 0),
                   coalesce(sum(cost_usd) FILTER (WHERE started_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')), 0),
                   coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE status = 'ok'), 0)
            FROM teacher_requests
            """).rows.first
        s.requests = int(r?[0]); s.okRequests = int(r?[1]); s.promptTokens = int(r?[2]); s.completionTokens = int(r?[3])
        s.cost = double(r?[4]); s.costToday = double(r?[5]); s.medianLatencyMs = double(r?[6])
        for row in try db.execute("SELECT status, count(*) FROM teacher_requests GROUP BY 1").rows { s.requestsByStatus[row[0] ?? "?"] = int(row[1]) }
        let l = try db.execute("""
            SELECT count(*) FILTER (WHERE status = 'labelled'), count(*) FILTER (WHERE status = 'ambiguous'),
                   coalesce(sum(jsonb_array_length(votes)), 0),
                   coalesce(sum((SELECT count(*) FROM jsonb_array_elements_text(votes) v WHERE v = 'FAIL')), 0)
            FROM teacher_labels
            """).rows.first
        s.labelled = int(l?[0]); s.ambiguous = int(l?[1]); s.samples = int(l?[2]); s.failedSamples = int(l?[3])
        for row in try db.execute("SELECT status, count(*) FROM teacher_queue GROUP BY 1").rows { s.queueByStatus[row[0] ?? "?"] = int(row[1]) }
        for row in try db.execute("SELECT reason, count(*) FROM teacher_queue GROUP BY 1").rows { s.queueByReason[row[0] ?? "?"] = int(row[1]) }
        s.newsItems = int(try db.execute("SELECT count(*) FROM news_items").rows.first?[0])
        s.exploration = try db.execute("""
            SELECT coalesce(q.model_version, '-'), count(*), count(*) FILTER (WHERE q.predicted_label = l.label)
            FROM teacher_queue q JOIN teacher_labels l USING (text_hash)
            WHERE q.reason = 'explore' AND l.status = 'labelled'
            GROUP BY 1 ORDER BY 1
            """).rows.map { ($0[0] ?? "-", int($0[1]), int($0[2])) }
        return s
    }

    /// Wilson 95 % interval of a proportion.
    public static func wilson(_ k: Int, _ n: Int) -> (low: Double, high: Double) {
        guard n > 0 else { return (0, 1) }
        let z = 1.96, p = Double(k) / Double(n), nn = Double(n)
        let centre = (p + z * z / (2 * nn)) / (1 + z * z / nn)
        let half = z * ((p * (1 - p) / nn + z * z / (4 * nn * nn)).squareRoot()) / (1 + z * z / nn)
        return (max(0, centre - half), min(1, centre + half))
    }

    /// For `--json`.
    public var dictionary: [String: Any] {
        [
            "requests": requests, "ok_requests": okRequests, "requests_by_status": requestsByStatus,
            "prompt_tokens": promptTokens, "completion_tokens": completionTokens, "cost_usd": cost, "cost_usd_today": costToday,
            "median_latency_ms": medianLatencyMs, "labelled": labelled, "ambiguous": ambiguous, "samples": samples, "failed_samples": failedSamples,
            "queue_by_status": queueByStatus, "queue_by_reason": queueByReason, "news_items": newsItems,
            "exploration": exploration.map { ["model_version": $0.model, "items": $0.items, "agreed": $0.agreed] },
        ]
    }

    /// The human report.
    public func report(prices: (input: Double, output: Double)) -> String {
        func pct(_ a: Int, _ b: Int) -> String { b == 0 ? "-" : String(format: "%.1f %%", 100 * Double(a) / Double(b)) }
        let verdicts = labelled + ambiguous
        var out = "teacher requests\n"
        out += formatTable([["requests", "answered", "prompt tokens", "completion tokens", "spend USD", "today USD", "median latency ms"],
                            [String(requests), String(okRequests), String(promptTokens), String(completionTokens),
                             String(format: "%.4f", cost), String(format: "%.4f", costToday), String(format: "%.0f", medianLatencyMs)]])
        out += "\nby status: " + requestsByStatus.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n"
        out += "\nverdicts\n"
        out += formatTable([["labelled", "ambiguous", "ambiguous rate", "samples", "FAIL samples", "FAIL rate", "requests per verdict"],
                            [String(labelled), String(ambiguous), pct(ambiguous, verdicts), String(samples), String(failedSamples), pct(failedSamples, samples),
                             verdicts == 0 ? "-" : String(format: "%.2f", Double(requests) / Double(verdicts))]])
        out += "\nqueue: " + queueByStatus.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        out += "; chosen as: " + queueByReason.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n"
        if newsItems > 0 {
            let queued = queueByReason.values.reduce(0, +)
            out += String(format: "share of %d news items sent to the teacher: %.1f %%; spend per million sentences: $%.2f\n",
                          newsItems, 100 * Double(queued) / Double(newsItems), cost / Double(newsItems) * 1_000_000)
        }
        out += "\nstudent live accuracy on random exploration items (agreement with the teacher)\n"
        if exploration.isEmpty { out += "(no exploration items labelled yet)\n" } else {
            out += formatTable([["model version", "items", "agreed", "accuracy", "95 % interval"]] + exploration.map { e in
                let w = Self.wilson(e.agreed, e.items)
                return [e.model, String(e.items), String(e.agreed), pct(e.agreed, e.items), String(format: "%.2f-%.2f", w.low, w.high)]
            })
        }
        return out
    }
}
