import Foundation
import NewsdHTTP
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// What the ML owner asks about the teacher: calls, tokens, spend, FAIL and ambiguous rates, the
/// queue, and the student's live accuracy measured on the random exploration items (an unbiased
/// estimate, unlike agreement on the uncertain items the teacher mostly sees).
public struct TeacherStatistics: Sendable, Codable {
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
    public var exploration: [ExplorationAccuracy] = []

    /// The `--json` keys.
    enum CodingKeys: String, CodingKey {
        case requests, okRequests = "ok_requests", requestsByStatus = "requests_by_status", promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens", cost = "cost_usd", costToday = "cost_usd_today", medianLatencyMs = "median_latency_ms"
        case labelled, ambiguous, samples, failedSamples = "failed_samples", queueByStatus = "queue_by_status"
        case queueByReason = "queue_by_reason", newsItems = "news_items", exploration
    }

    /// Reads everything from the database.
    public static func read(_ db: PostgresConnection) throws -> TeacherStatistics {
        var s = TeacherStatistics()
        let r = try db.query("""
            SELECT count(*) AS requests, count(*) FILTER (WHERE status = 'ok') AS ok,
                   coalesce(sum(prompt_tokens), 0) AS prompt_tokens, coalesce(sum(completion_tokens), 0) AS completion_tokens,
                   coalesce(sum(cost_usd), 0)::double precision AS cost,
                   coalesce(sum(cost_usd) FILTER (WHERE started_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')), 0)::double precision AS cost_today,
                   coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE status = 'ok'), 0)::double precision AS median_latency_ms
            FROM teacher_requests
            """).single()
        s.requests = try r.decode("requests"); s.okRequests = try r.decode("ok")
        s.promptTokens = try r.decode("prompt_tokens"); s.completionTokens = try r.decode("completion_tokens")
        s.cost = try r.decode("cost"); s.costToday = try r.decode("cost_today"); s.medianLatencyMs = try r.decode("median_latency_ms")
        func counts(_ sql: PostgresQuery) throws -> [String: Int] {
            try Dictionary(db.query(sql).typed.map { (try $0.decode("key", as: String.self), try $0.decode("n", as: Int.self)) }, uniquingKeysWith: +)
        }
        s.requestsByStatus = try counts("SELECT status AS key, count(*) AS n FROM teacher_requests GROUP BY 1")
        let l = try db.query("""
            SELECT count(*) FILTER (WHERE status = 'labelled') AS labelled, count(*) FILTER (WHERE status = 'ambiguous') AS ambiguous,
                   coalesce(sum(jsonb_array_length(votes)), 0) AS samples,
                   coalesce(sum((SELECT count(*) FROM jsonb_array_elements_text(votes) v WHERE v = 'FAIL')), 0) AS failed
            FROM teacher_labels
            """).single()
        s.labelled = try l.decode("labelled"); s.ambiguous = try l.decode("ambiguous")
        s.samples = try l.decode("samples"); s.failedSamples = try l.decode("failed")
        s.queueByStatus = try counts("SELECT status AS key, count(*) AS n FROM teacher_queue GROUP BY 1")
        s.queueByReason = try counts("SELECT reason AS key, count(*) AS n FROM teacher_queue GROUP BY 1")
        s.newsItems = try db.query("SELECT count(*) AS n FROM news_items").single().decode("n")
        s.exploration = try db.query("""
            SELECT coalesce(q.model_version, '-') AS model, count(*) AS items, count(*) FILTER (WHERE q.predicted_label = l.label) AS agreed
            FROM teacher_queue q JOIN teacher_labels l USING (text_hash)
            WHERE q.reason = 'explore' AND l.status = 'labelled'
            GROUP BY 1 ORDER BY 1
            """).typed.map { ExplorationAccuracy(modelVersion: try $0.decode("model"), items: try $0.decode("items"), agreed: try $0.decode("agreed")) }
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
                return [e.modelVersion, String(e.items), String(e.agreed), pct(e.agreed, e.items), String(format: "%.2f-%.2f", w.low, w.high)]
            })
        }
        return out
    }
}

/// The student's agreement with the teacher on random exploration items, for one model version.
public struct ExplorationAccuracy: Sendable, Codable, Equatable {
    /// The model version that predicted.
    public var modelVersion: String
    /// Exploration items with a teacher verdict.
    public var items: Int
    /// Of them, predicted as the teacher labelled.
    public var agreed: Int
    enum CodingKeys: String, CodingKey { case modelVersion = "model_version", items, agreed }
}
