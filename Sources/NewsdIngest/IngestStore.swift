import Foundation
import Logging
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// One consumed message after parsing, linking and classification.
public struct ProcessedMessage: Sendable {
    /// What became of it.
    public enum Outcome: Sendable {
        /// Accepted: the item, its prediction and the companies it mentions.
        case accepted(NewsItem, Prediction, [Mention])
        /// Refused, with the reason.
        case rejected(String)
    }
    /// Where it was read.
    public var topicPartition: TopicPartition
    /// Its offset.
    public var offset: Int64
    /// The raw bytes (kept for rejected messages).
    public var raw: [UInt8]
    /// What became of it.
    public var outcome: Outcome
    /// Why it goes to the teacher (nil: it does not); enqueued in the same transaction.
    public var teach: SelectionReason? = nil

    /// A processed message.
    public init(topicPartition: TopicPartition, offset: Int64, raw: [UInt8], outcome: Outcome, teach: SelectionReason? = nil) {
        self.topicPartition = topicPartition; self.offset = offset; self.raw = raw; self.outcome = outcome; self.teach = teach
    }
}

/// Figures of one written batch.
public struct BatchWriteResult: Sendable {
    /// News items inserted (already-present ones are skipped).
    public var inserted = 0
    /// Rejected messages recorded.
    public var rejected = 0
    /// Mentions inserted.
    public var mentions = 0
    /// Items put on the teacher queue.
    public var queued = 0
}

/// Writes micro-batches to Postgres: items, predictions, mentions, rejected messages and the
/// consumer's next offsets in ONE transaction, so a batch is either entirely stored with its
/// offsets or not at all. Unique keys on (topic, partition, offset) make a replayed batch a no-op:
/// exactly one result per message across crashes, rebalances and restarts. Not thread-safe.
public final class IngestStore {
    private let url: String
    private let groupID: String
    private let maxBackoff: Double
    /// The pipeline sets a logger carrying the batch id before each write.
    var logger: Logger
    private var connection: PostgresConnection?
    /// Cancels the statement in flight on the store's connection, from any thread: at the end of
    /// the shutdown bound a write that waits on a lock or a slow server is abandoned (its batch's
    /// offsets are not committed, so the next owner reads it again).
    let statementCanceller: LockedValue<PostgresCanceller?>
    /// Called with each failed attempt (for metrics and health).
    public var onFailure: (Error) -> Void = { _ in }
    /// Called when the database refuses data (SQLSTATE class 22, 23, 54: the batch is bisected).
    public var onDataError: (PostgresError) -> Void = { _ in }

    /// A store for consumer group `groupID`; connects lazily and reconnects with backoff.
    /// `statementCanceller` receives the canceller of each connection the store opens.
    public init(url: String, groupID: String, maxBackoff: Double = 30, logger: Logger,
                statementCanceller: LockedValue<PostgresCanceller?> = LockedValue(nil)) {
        self.statementCanceller = statementCanceller
        self.url = url
        self.groupID = groupID
        self.maxBackoff = maxBackoff
        self.logger = logger
    }

    private func connected() throws -> PostgresConnection {
        if let c = connection, c.isConnected { return c }
        connection = nil
        let c = try PostgresConnection(url)
        try c.executeScript("""
            CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
                topic text, partition integer, kafka_offset bigint, external_id text, text text,
                published_at timestamptz, source text, label text, probabilities jsonb, margin real, entropy real,
                companies text[], matched_by text[], text_hash text, teach text) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE IF NOT EXISTS rejected_stage (
                topic text, partition integer, kafka_offset bigint, raw bytea, reason text) ON COMMIT DELETE ROWS;
            """)
        connection = c
        statementCanceller.withLock { $0 = c.canceller() }
        return c
    }

    /// The incarnation of each partition this store has seen (0 until its offsets restart).
    /// Used by the ingest thread only, like the store itself.
    private var incarnations: [TopicPartition: Int] = [:]

    /// The key a partition's rows are stored under: the topic itself, or `topic#N` once its
    /// offsets restarted N times (the topic was recreated or the broker lost its log), so the new
    /// messages never collide with the stored ones.
    public func storageKey(_ tp: TopicPartition) -> TopicPartition {
        let n = incarnations[tp] ?? 0
        return n == 0 ? tp : TopicPartition(topic: "\(tp.topic)#\(n)", partition: tp.partition)
    }

    /// Next offsets stored for these partitions' current incarnations (those never written are
    /// absent). Retries with backoff until `deadline` (nil: forever) on connection errors.
    public func storedOffsets(_ partitions: [TopicPartition], until deadline: Date? = nil) throws -> [TopicPartition: Int64] {
        try withRetry(until: { deadline }, what: "read stored offsets") { db in
            for r in try db.query("""
                SELECT topic, partition, max(incarnation) AS incarnation FROM topic_incarnations
                WHERE group_id = \(groupID) GROUP BY 1, 2
                """).typed {
                incarnations[TopicPartition(topic: try r.decode("topic"), partition: try r.decode("partition"))] = try r.decode("incarnation")
            }
            let rows = try db.query("SELECT topic, partition, next_offset FROM consumer_offsets WHERE group_id = \(groupID)").typed
            var stored: [TopicPartition: Int64] = [:]
            for r in rows { stored[TopicPartition(topic: try r.decode("topic"), partition: try r.decode("partition"))] = try r.decode("next_offset") }
            var out: [TopicPartition: Int64] = [:]
            for tp in partitions { if let next = stored[storageKey(tp)] { out[tp] = next } }
            return out
        }
    }

    /// Opens the next incarnation of `tp` (its offsets went back: the topic was recreated or the
    /// broker lost data) and returns it; from now on its rows are stored under the new key.
    @discardableResult
    public func startIncarnation(_ tp: TopicPartition, reason: String, until deadline: @escaping () -> Date? = { nil }) throws -> Int {
        let next = (incarnations[tp] ?? 0) + 1
        _ = try withRetry(until: deadline, what: "start a topic incarnation") { db in
            try db.query("""
                INSERT INTO topic_incarnations (group_id, topic, partition, incarnation, reason)
                VALUES (\(groupID), \(tp.topic), \(tp.partition), \(next), \(reason))
                ON CONFLICT DO NOTHING
                """)
        }
        incarnations[tp] = next
        return next
    }

    /// Writes a batch with its next offsets; retries on lost connections with exponential backoff
    /// (nothing is committed twice: the whole batch is one transaction and replays are no-ops)
    /// until `deadline`. A batch the database refuses for the data itself (SQLSTATE class 22, 23,
    /// 54) is bisected: each half is written on its own (with its own offsets, which only ever
    /// move forward), down to the one message the database refuses, which goes to
    /// `rejected_messages` with the SQLSTATE and the server's message. A message can never stop
    /// the stream.
    public func write(_ batch: [ProcessedMessage], modelVersion: String, labels: [String],
                      until deadline: @escaping () -> Date? = { nil }) throws -> BatchWriteResult {
        guard !batch.isEmpty else { return BatchWriteResult() }
        return try writeBisecting(batch[...], modelVersion: modelVersion, labels: labels, until: deadline)
    }

    private func writeBisecting(_ part: ArraySlice<ProcessedMessage>, modelVersion: String, labels: [String],
                                until deadline: @escaping () -> Date?) throws -> BatchWriteResult {
        do {
            return try withRetry(until: deadline, what: "write batch") { db in try self.writeOnce(Array(part), modelVersion: modelVersion, labels: labels, db: db) }
        } catch let e as PostgresError where e.isDataError {
            onDataError(e)
            guard part.count > 1 else {
                var refused = part.first!
                refused.outcome = .rejected("database refused the message: \(e.message.prefix(300)) (SQLSTATE \(e.sqlState ?? "?"))")
                logger.error("message refused by the database; stored as rejected", metadata: [
                    "topic": "\(refused.topicPartition.topic)", "partition": "\(refused.topicPartition.partition)",
                    "offset": "\(refused.offset)", "sqlstate": "\(e.sqlState ?? "?")"])
                return try withRetry(until: deadline, what: "write rejected message") { db in
                    try self.writeOnce([refused], modelVersion: modelVersion, labels: labels, db: db)
                }
            }
            logger.warning("batch refused by the database; bisecting", metadata: ["messages": "\(part.count)", "error": "\(e)"])
            let middle = part.startIndex + part.count / 2
            var total = try writeBisecting(part[..<middle], modelVersion: modelVersion, labels: labels, until: deadline)
            let second = try writeBisecting(part[middle...], modelVersion: modelVersion, labels: labels, until: deadline)
            total.inserted += second.inserted; total.rejected += second.rejected
            total.mentions += second.mentions; total.queued += second.queued
            return total
        }
    }

    private func writeOnce(_ batch: [ProcessedMessage], modelVersion: String, labels: [String], db: PostgresConnection) throws -> BatchWriteResult {
        var items = "", rejected = ""
        var next: [TopicPartition: Int64] = [:]
        for m in batch {
            next[m.topicPartition] = max(next[m.topicPartition] ?? 0, m.offset + 1)
            let key: [String?] = [m.topicPartition.topic, String(m.topicPartition.partition), String(m.offset)]
            switch m.outcome {
            case let .accepted(item, p, mentions):
                let probabilities = p.probabilitiesJSON(labels: labels)
                items += CopyText.row(key + [
                    item.externalID, item.text, item.publishedAt.map(timestamp), item.source, p.label, probabilities,
                    p.margin.isFinite ? String(p.margin) : "NaN", p.entropy.isFinite ? String(p.entropy) : "NaN",
                    mentions.map(\.companyID).postgresText, mentions.map(\.kind.rawValue).postgresText,
                    m.teach == nil ? nil : teacherTextHash(item.text), m.teach?.rawValue,
                ])
            case let .rejected(reason):
                rejected += CopyText.row(key + [CopyText.bytea(m.raw), reason])
            }
        }
        return try db.transaction {
            var result = BatchWriteResult()
            if !items.isEmpty {
                try db.copyIn("COPY ingest_stage FROM STDIN", data: items)
                let r = try db.execute("""
                    WITH ins AS (
                        INSERT INTO news_items (topic, partition, kafka_offset, external_id, text, published_at, source)
                        SELECT topic, partition, kafka_offset, external_id, text, published_at, source FROM ingest_stage
                        ON CONFLICT (topic, partition, kafka_offset) DO NOTHING
                        RETURNING id, topic, partition, kafka_offset, coalesce(published_at, received_at) AS at
                    ), pred AS (
                        INSERT INTO predictions (item_id, model_version, label, probabilities, margin, entropy)
                        SELECT ins.id, $1, s.label, s.probabilities, s.margin, s.entropy
                        FROM ins JOIN ingest_stage s USING (topic, partition, kafka_offset)
                        RETURNING 1
                    ), men AS (
                        INSERT INTO mentions (item_id, company_id, matched_by, published_at)
                        SELECT ins.id, m.company_id, m.matched_by, ins.at
                        FROM ins JOIN ingest_stage s USING (topic, partition, kafka_offset)
                        CROSS JOIN LATERAL unnest(s.companies, s.matched_by) AS m(company_id, matched_by)
                        ON CONFLICT DO NOTHING
                        RETURNING 1
                    )
                    SELECT (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM pred) AS predicted, (SELECT count(*) FROM men) AS mentions
                    """, [modelVersion]).single()
                result.inserted = try r.decode("inserted")
                result.mentions = try r.decode("mentions")
                if batch.contains(where: { $0.teach != nil }) {
                    // Chosen for the teacher: queued with the facts, once per text, never when the
                    // text already has a verdict. Exploration items go first (they measure live
                    // accuracy), then the least certain.
                    result.queued = try db.execute("""
                        INSERT INTO teacher_queue (text_hash, text, item_id, reason, model_version, predicted_label, margin, priority)
                        SELECT DISTINCT ON (s.text_hash) s.text_hash, s.text, n.id, s.teach, $1, s.label, s.margin,
                               CASE s.teach WHEN 'explore' THEN -1 WHEN 'cold_start' THEN 0 ELSE s.margin END
                        FROM ingest_stage s JOIN news_items n USING (topic, partition, kafka_offset)
                        WHERE s.teach IS NOT NULL
                          AND NOT EXISTS (SELECT 1 FROM teacher_labels l WHERE l.text_hash = s.text_hash)
                        ORDER BY s.text_hash, n.id
                        ON CONFLICT (text_hash) DO NOTHING
                        """, [modelVersion]).affected
                }
            }
            if !rejected.isEmpty {
                try db.copyIn("COPY rejected_stage FROM STDIN", data: rejected)
                result.rejected = try db.execute("""
                    INSERT INTO rejected_messages (topic, partition, kafka_offset, raw, reason)
                    SELECT topic, partition, kafka_offset, raw, reason FROM rejected_stage
                    ON CONFLICT (topic, partition, kafka_offset) DO NOTHING
                    """).affected
            }
            let parts = next.sorted { ($0.key.topic, $0.key.partition) < ($1.key.topic, $1.key.partition) }
            try db.query("""
                INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)
                SELECT \(groupID), t, p, o
                FROM unnest(\(parts.map(\.key.topic))::text[], \(parts.map(\.key.partition))::integer[], \(parts.map(\.value))::bigint[]) AS x(t, p, o)
                ON CONFLICT (group_id, topic, partition)
                DO UPDATE SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset), updated_at = now()
                """)
            return result
        }
    }

    /// Runs `body` with a connection, reconnecting with exponential backoff (100 ms doubling up to
    /// `maxBackoff`, with jitter) on retriable errors until `deadline`.
    func withRetry<T>(until deadline: () -> Date?, what: String, _ body: (PostgresConnection) throws -> T) throws -> T {
        try retry(RetryPolicy(initialDelay: 0.1, maxDelay: maxBackoff), deadline: deadline, onRetry: { [logger] r in
            logger.warning("postgres unavailable, retrying", metadata: ["operation": "\(what)", "error": "\(r.error)", "retry_in_s": "\(String(format: "%.1f", r.delay))"])
        }) {
            do { return try body(try connected()) } catch let e as PostgresError where e.isRetriable {
                onFailure(e)
                connection = nil
                throw e
            }
        }
    }

    /// Items ever queued for the teacher and today's (UTC) teacher spend, for selection.
    public func teacherState(until deadline: @escaping () -> Date?) throws -> (queued: Int, spent: Double) {
        try withRetry(until: deadline, what: "read teacher state") { db in
            (try TeacherQueue.counts(db).queued, try TeacherQueue.spentToday(db))
        }
    }

    /// One formatter per store (the store is used by one thread): building one per row cost more
    /// than formatting.
    private let timestampFormatter: ISO8601DateFormatter = {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }()

    func timestamp(_ d: Date) -> String { timestampFormatter.string(from: d) }
}
