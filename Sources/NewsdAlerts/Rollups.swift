import Foundation
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// The analysts' rollups (`sentiment_hourly`, `sentiment_daily`, `model_agreement`).
///
/// Correctness rule: a rollup row of (company, hour) always equals an aggregate of the effective
/// prediction of each item mentioned in that hour (the newest prediction not withdrawn by a
/// rollback). Triggers on `predictions` and `mentions` note every item and hour an insert, update
/// or delete touches (an ingest batch, a rescore, a rollback's withdrawal, a retention delete); a
/// pass recomputes exactly those hours from the raw tables and then their days from the hours.
/// So a rollback followed by a rescore changes the rollups of the hours whose items changed, and
/// nothing else. One host at a time runs a pass (transaction-scoped advisory lock).
public enum AnalystRollups {
    /// Figures of one pass.
    public struct Pass: Sendable, Equatable {
        /// Hours and days recomputed (0 when another host held the lock or nothing changed).
        public var hours: Int, days: Int
    }

    /// Recomputes the hours and days touched since the last pass, in chunks of `chunk` dirty
    /// items (bounded transactions after a big rescore); returns what it did.
    @discardableResult
    public static func pass(_ db: PostgresConnection, lowConfidenceMargin: Double, chunk: Int = 50_000, stop: StopFlag? = nil) throws -> Pass {
        var total = Pass(hours: 0, days: 0)
        while true {
            // A stop ends the pass between chunks (each chunk is one transaction; the rest waits).
            if stop?.isSet == true { return total }
            let (p, more) = try db.transaction { () -> (Pass, Bool) in
                guard try db.query("SELECT pg_try_advisory_xact_lock(\(AdvisoryLock.rollup)) AS locked").single().decode("locked", as: Bool.self) else {
                    return (Pass(hours: 0, days: 0), false)
                }
                try db.execute("CREATE TEMP TABLE IF NOT EXISTS rollup_hours (company_id text, hour timestamptz) ON COMMIT DROP")
                // Items to hours (their mentions are committed by now); then the noted hours.
                let items = try db.query("""
                    WITH taken AS (DELETE FROM rollup_dirty_items WHERE ctid IN (SELECT ctid FROM rollup_dirty_items LIMIT \(chunk)) RETURNING item_id)
                    INSERT INTO rollup_hours SELECT DISTINCT m.company_id, date_trunc('hour', m.published_at, 'UTC')
                    FROM mentions m WHERE m.item_id IN (SELECT item_id FROM taken)
                    """).affected
                let noted = try db.query("""
                    WITH taken AS (DELETE FROM rollup_dirty_hours WHERE ctid IN (SELECT ctid FROM rollup_dirty_hours LIMIT \(chunk)) RETURNING company_id, hour)
                    INSERT INTO rollup_hours SELECT company_id, hour FROM taken
                    """).affected
                let remaining = try db.query("""
                    SELECT (EXISTS (SELECT 1 FROM rollup_dirty_items) OR EXISTS (SELECT 1 FROM rollup_dirty_hours)) AS more
                    """).single().decode("more", as: Bool.self)
                if items == 0 && noted == 0 { return (Pass(hours: 0, days: 0), remaining) }
                try db.execute("CREATE TEMP TABLE rollup_buckets ON COMMIT DROP AS SELECT DISTINCT company_id, hour FROM rollup_hours")
                try db.execute("ANALYZE rollup_buckets")
                let hours = try db.execute("""
                    DELETE FROM sentiment_hourly r USING rollup_buckets b WHERE r.company_id = b.company_id AND r.hour = b.hour
                    """).affected
                _ = hours
                let inserted = try db.query("""
                    INSERT INTO sentiment_hourly (company_id, hour, items, positive, negative, neutral, p_positive_sum, p_negative_sum,
                                                  p_neutral_sum, low_confidence, model_versions)
                    SELECT b.company_id, b.hour, count(*),
                           count(*) FILTER (WHERE p.label = 'positive'), count(*) FILTER (WHERE p.label = 'negative'),
                           count(*) FILTER (WHERE p.label = 'neutral'),
                           coalesce(sum((p.probabilities->>'positive')::float8), 0), coalesce(sum((p.probabilities->>'negative')::float8), 0),
                           coalesce(sum((p.probabilities->>'neutral')::float8), 0),
                           count(*) FILTER (WHERE p.margin < \(lowConfidenceMargin)),
                           array_agg(DISTINCT p.model_version ORDER BY p.model_version)
                    FROM rollup_buckets b
                    -- LATERAL with OFFSET 0 (never flattened into a join): one index range scan of
                    -- mentions (company, time) per hour, whatever the planner guesses about the
                    -- temporary table; a join let it compute the effective prediction of every
                    -- stored mention first.
                    CROSS JOIN LATERAL (SELECT m.item_id FROM mentions m WHERE m.company_id = b.company_id
                                        AND m.published_at >= b.hour AND m.published_at < b.hour + interval '1 hour' OFFSET 0) m
                    CROSS JOIN LATERAL (SELECT label, probabilities, margin, model_version FROM predictions p WHERE p.item_id = m.item_id
                                        ORDER BY p.withdrawn, p.predicted_at DESC, p.id DESC LIMIT 1) p
                    GROUP BY b.company_id, b.hour
                    """).affected
                _ = inserted
                try db.execute("""
                    CREATE TEMP TABLE rollup_days ON COMMIT DROP AS
                    SELECT DISTINCT company_id, date_trunc('day', hour, 'UTC') AS day FROM rollup_buckets
                    """)
                try db.execute("DELETE FROM sentiment_daily r USING rollup_days d WHERE r.company_id = d.company_id AND r.day = d.day")
                let days = try db.execute("""
                    INSERT INTO sentiment_daily (company_id, day, items, positive, negative, neutral, p_positive_sum, p_negative_sum,
                                                 p_neutral_sum, low_confidence, model_versions)
                    SELECT d.company_id, d.day, sum(h.items), sum(h.positive), sum(h.negative), sum(h.neutral), sum(h.p_positive_sum),
                           sum(h.p_negative_sum), sum(h.p_neutral_sum), sum(h.low_confidence),
                           (SELECT array_agg(DISTINCT v ORDER BY v) FROM sentiment_hourly h2 CROSS JOIN unnest(h2.model_versions) v
                            WHERE h2.company_id = d.company_id AND h2.hour >= d.day AND h2.hour < d.day + interval '1 day')
                    FROM rollup_days d
                    CROSS JOIN LATERAL (SELECT * FROM sentiment_hourly h WHERE h.company_id = d.company_id
                                        AND h.hour >= d.day AND h.hour < d.day + interval '1 day' OFFSET 0) h
                    GROUP BY d.company_id, d.day
                    """).affected
                let buckets = try db.query("SELECT count(*) AS n FROM rollup_buckets").single().decode("n", as: Int.self)
                return (Pass(hours: buckets, days: days), remaining)
            }
            total.hours += p.hours; total.days += p.days
            if !more { return total }
        }
    }

    /// Refreshes `model_agreement` (concurrently: analysts keep reading the old content
    /// meanwhile), on one host at a time; false when another host holds the lock.
    @discardableResult
    public static func refreshAgreement(_ db: PostgresConnection) throws -> Bool {
        try db.transaction {
            guard try db.query("SELECT pg_try_advisory_xact_lock(\(AdvisoryLock.agreement)) AS locked").single().decode("locked", as: Bool.self) else { return false }
            try db.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY model_agreement")
            return true
        }
    }

    /// The newest rescored prediction's id (the agreement is refreshed only when it moved).
    public static func rescoredMark(_ db: PostgresConnection) throws -> Int64 {
        try db.query("SELECT coalesce(max(item_id), 0) + count(*) AS mark FROM predictions WHERE rescored").single().decode("mark")
    }
}
