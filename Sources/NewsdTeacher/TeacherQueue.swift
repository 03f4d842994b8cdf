import Dispatch
import Foundation
import Logging
import NewsdHTTP
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// The teacher-cache key of a text: SHA-256 of its normalised form (NFC, lower-case, collapsed
/// whitespace), 32 hex digits. Stable across versions and hosts: a sentence labelled once is
/// never sent again.
public func teacherTextHash(_ text: String) -> String {
    String(SHA256.hex(of: Array(TextHash.normalize(text).utf8)).prefix(32))
}

/// An item claimed from the teacher queue.
public struct QueuedItem: Sendable {
    /// Queue row id.
    public var id: Int64
    /// Normalised-text hash.
    public var textHash: String
    /// The text.
    public var text: String
    /// Claims so far, this one included.
    public var attempts: Int
}

/// The durable teacher queue in Postgres: claims with `FOR UPDATE SKIP LOCKED` and a lease (so
/// several hosts share it and a crashed worker's items are taken up again when the lease ends),
/// request records, and verdicts keyed by text hash (a text is labelled once, ever).
public enum TeacherQueue {
    /// Claims up to `limit` pending items whose lease is free, least certain first. Items claimed
    /// `maxAttempts` times already (their workers kept dying) are marked failed instead.
    public static func claim(_ db: PostgresConnection, worker: String, limit: Int, leaseSeconds: Double, maxAttempts: Int = 1_000_000) throws -> [QueuedItem] {
        try db.execute("""
            UPDATE teacher_queue SET status = 'failed', last_error = coalesce(last_error || '; ', '') || 'claimed too often'
            WHERE status = 'pending' AND attempts >= $1::integer AND (leased_until IS NULL OR leased_until < now())
            """, [String(maxAttempts)])
        return try db.execute("""
            UPDATE teacher_queue q SET lease_owner = $1, leased_until = now() + make_interval(secs => $2::double precision),
                   attempts = q.attempts + 1
            WHERE q.id IN (SELECT id FROM teacher_queue
                           WHERE status = 'pending' AND (leased_until IS NULL OR leased_until < now())
                           ORDER BY priority, id LIMIT $3 FOR UPDATE SKIP LOCKED)
            RETURNING q.id, q.text_hash, q.text, q.attempts
            """, [worker, String(leaseSeconds), String(limit)]).typed.map { r in
            QueuedItem(id: try r.decode("id"), textHash: try r.decode("text_hash"), text: try r.decode("text"), attempts: try r.decode("attempts"))
        }.sorted { $0.id < $1.id }
    }

    /// Records one HTTP request.
    public static func record(_ db: PostgresConnection, item: QueuedItem?, worker: String, _ r: TeacherRequestRecord) throws {
        try db.execute("""
            INSERT INTO teacher_requests (queue_id, text_hash, sample, samples, status, http_status, prompt_tokens,
                                          completion_tokens, cost_usd, latency_ms, started_at, worker, error)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, to_timestamp($11::double precision), $12, $13)
            """, [item.map { String($0.id) }, item?.textHash, String(r.sample), String(r.samples), r.status, r.httpStatus.map(String.init),
                  String(r.promptTokens), String(r.completionTokens), String(r.cost), String(r.latency * 1000),
                  String(r.startedAt.timeIntervalSince1970), worker, r.error.map { String($0.prefix(500)) }])
    }

    /// Stores the verdict and marks the item done, in one transaction. Returns false when the text
    /// already had a verdict (another worker finished it first): it is never stored twice.
    @discardableResult
    public static func complete(_ db: PostgresConnection, item: QueuedItem, label: TeacherLabel, teacherModel: String) throws -> Bool {
        try db.transaction {
            let inserted = try db.execute("""
                INSERT INTO teacher_labels (text_hash, text, label, status, distribution, votes, reasons, teacher_model, queue_id)
                VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8, $9)
                ON CONFLICT (text_hash) DO NOTHING
                """, [item.textHash, item.text, label.label, label.status, try JSONText.encode(label.distribution), try JSONText.encode(label.votes),
                      try JSONText.encode(label.reasons), teacherModel, String(item.id)]).affected
            try db.execute("""
                UPDATE teacher_queue SET status = 'done', done_at = now(), lease_owner = NULL, leased_until = NULL, last_error = NULL
                WHERE id = $1 AND status = 'pending'
                """, [String(item.id)])
            return inserted == 1
        }
    }

    /// Gives an item back, if this worker still holds it. A failure of the item counts towards
    /// `maxAttempts` (then it is marked failed with the last error); a stop or a spent budget does
    /// not (`countsAsAttempt: false` undoes the claim's count).
    public static func release(_ db: PostgresConnection, item: QueuedItem, worker: String, error: String, maxAttempts: Int,
                               countsAsAttempt: Bool = true, retryAfterSeconds: Double = 0) throws {
        try db.execute("""
            UPDATE teacher_queue SET last_error = $2,
                   attempts = CASE WHEN $5::boolean THEN attempts ELSE greatest(attempts - 1, 0) END,
                   status = CASE WHEN $5::boolean AND attempts >= $3::integer THEN 'failed' ELSE status END,
                   lease_owner = NULL,
                   leased_until = CASE WHEN $4::double precision > 0 THEN now() + make_interval(secs => $4::double precision) END
            WHERE id = $1 AND status = 'pending' AND lease_owner = $6
            """, [String(item.id), String(error.prefix(500)), String(maxAttempts), String(retryAfterSeconds),
                  countsAsAttempt ? "true" : "false", worker])
    }

    /// Extends this worker's leases on items still being labelled.
    public static func renew(_ db: PostgresConnection, ids: [Int64], worker: String, leaseSeconds: Double) throws {
        guard !ids.isEmpty else { return }
        try db.execute("""
            UPDATE teacher_queue SET leased_until = now() + make_interval(secs => $3::double precision)
            WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND status = 'pending'
            """, ["{" + ids.map(String.init).joined(separator: ",") + "}", worker, String(leaseSeconds)])
    }

    /// Puts texts on the queue (manual enqueue); returns how many were new (labelled or queued
    /// texts are skipped).
    public static func enqueue(_ db: PostgresConnection, texts: [String], reason: String) throws -> Int {
        var data = ""
        var seen = Set<String>()
        for t in texts {
            let h = teacherTextHash(t)
            if seen.insert(h).inserted { data += CopyText.row([h, t]) }
        }
        return try db.transaction {
            try db.execute("CREATE TEMP TABLE IF NOT EXISTS enqueue_stage (text_hash text, text text) ON COMMIT DELETE ROWS")
            try db.copyIn("COPY enqueue_stage FROM STDIN", data: data)
            return try db.execute("""
                INSERT INTO teacher_queue (text_hash, text, reason)
                SELECT s.text_hash, s.text, $1 FROM enqueue_stage s
                WHERE NOT EXISTS (SELECT 1 FROM teacher_labels l WHERE l.text_hash = s.text_hash)
                ON CONFLICT (text_hash) DO NOTHING
                """, [reason]).affected
        }
    }

    /// Workers whose id starts with this verify alerts: their spend has its own budget
    /// (`alerts.teacher_daily_budget_usd`), outside the sampling budget.
    public static let alertWorkerPrefix = "alerts:"

    /// Today's (UTC) spend over all hosts, US dollars: of the sampling workers, or (`alerts: true`)
    /// of alert verification.
    public static func spentToday(_ db: PostgresConnection, alerts: Bool = false) throws -> Double {
        try db.query("""
            SELECT coalesce(sum(cost_usd), 0)::double precision AS spent FROM teacher_requests
            WHERE started_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
              AND starts_with(worker, \(alertWorkerPrefix)) = \(alerts)
            """).single().decode("spent")
    }

    /// Stores a verdict reached outside the queue (alert verification); false when the text had one.
    @discardableResult
    public static func store(_ db: PostgresConnection, text: String, label: TeacherLabel, teacherModel: String) throws -> Bool {
        try db.execute("""
            INSERT INTO teacher_labels (text_hash, text, label, status, distribution, votes, reasons, teacher_model)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8)
            ON CONFLICT (text_hash) DO NOTHING
            """, [teacherTextHash(text), text, label.label, label.status, try JSONText.encode(label.distribution), try JSONText.encode(label.votes),
                  try JSONText.encode(label.reasons), teacherModel]).affected == 1
    }

    /// Items queued ever (pending, done or failed) and still pending.
    public static func counts(_ db: PostgresConnection) throws -> (queued: Int, pending: Int) {
        let r = try db.query("SELECT count(*) AS queued, count(*) FILTER (WHERE status = 'pending') AS pending FROM teacher_queue").single()
        return (try r.decode("queued"), try r.decode("pending"))
    }
}
