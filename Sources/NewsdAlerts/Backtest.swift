import Foundation
import NewsdOps
import NewsdPostgres

/// Replays predictions through the detector in event time, as `newsd alerts backtest` does (and
/// the tests and benchmarks measuring detection delay and false alerts).
public enum Backtest {
    /// An alert the replay raised, and when it ended.
    public struct Fired: Sendable, Equatable {
        /// The company, rule and severity.
        public var company: String, rule: String, severity: String
        /// Raise time (event time, seconds since 1970), and the end (nil: still firing at the end).
        public var raisedAt: Double, resolvedAt: Double?
        /// The window's figures at the raise.
        public var figures: WindowFigures
    }

    /// Replays `events` (any order) evaluating every `step_minutes` from the first event; only
    /// alerts raised at or after `countFrom` are reported (the time before warms the baselines).
    /// Suppression by the teacher is not replayed: the stored predictions are what is tested.
    public static func run(_ events: [PredictionEvent], parameters: NewsdConfiguration.AlertDetector, overrides: [String: [String: Double]] = [:],
                           countFrom: Double = -.infinity, until: Double? = nil) -> [Fired] {
        let sorted = events.sorted { $0.time < $1.time }
        guard let first = sorted.first?.time else { return [] }
        let end = until ?? sorted.last!.time
        var detector = NegativeShiftDetector(parameters: parameters, overrides: overrides, drivers: 0)
        let step = parameters.stepMinutes * 60
        var t = (first / step).rounded(.up) * step
        var i = 0
        var fired: [Fired] = []
        var open: [String: Int] = [:]
        while t <= end + step {
            while i < sorted.count && sorted[i].time <= t { detector.add(sorted[i], now: t); i += 1 }
            for d in detector.evaluate(at: t) {
                switch d.kind {
                case let .raise(rule, severity):
                    if t >= countFrom {
                        open[d.company] = fired.count
                        fired.append(Fired(company: d.company, rule: rule, severity: severity, raisedAt: t, resolvedAt: nil, figures: d.figures))
                    }
                case .resolve:
                    if let k = open.removeValue(forKey: d.company) { fired[k].resolvedAt = t }
                }
            }
            t += step
        }
        return fired
    }

    /// The stored ingest predictions published in [from, until), as events.
    public static func events(_ db: PostgresConnection, from: Double, until: Double) throws -> [PredictionEvent] {
        try db.query("""
            SELECT p.item_id, m.company_id, extract(epoch FROM m.published_at)::float8 AS t,
                   coalesce((p.probabilities->>'negative')::float8, 0) AS pn, p.margin::float8 AS margin
            FROM mentions m
            CROSS JOIN LATERAL (SELECT * FROM predictions p WHERE p.item_id = m.item_id
                                ORDER BY p.withdrawn, p.predicted_at DESC, p.id DESC LIMIT 1) p
            WHERE m.published_at >= to_timestamp(\(from)) AND m.published_at < to_timestamp(\(until))
            """).typed.map { r in
            PredictionEvent(time: try r.decode("t"), company: try r.decode("company_id"), itemID: try r.decode("item_id"),
                            negativeProbability: try r.decode("pn"), margin: try r.decode("margin"))
        }
    }
}
