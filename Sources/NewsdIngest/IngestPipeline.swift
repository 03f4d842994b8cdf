import Dispatch
import Foundation
import Logging
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// Running totals of the ingest path, for logs, the closing summary and benchmarks.
public struct IngestStatistics: Sendable {
    /// Messages consumed.
    public var consumed = 0
    /// News items stored.
    public var stored = 0
    /// Messages rejected.
    public var rejected = 0
    /// Batches written.
    public var batches = 0
    /// Seconds spent per stage: waiting for and reading messages, parsing and linking,
    /// classifying, writing to Postgres.
    public var pollSeconds = 0.0, parseSeconds = 0.0, classifySeconds = 0.0, writeSeconds = 0.0
    /// Wall time of each batch from its first message to its commit, in seconds (last 10,000).
    public var batchLatencies: [Double] = []
    /// Postgres failures seen (each retried).
    public var databaseFailures = 0
    /// Items put on the teacher queue.
    public var queuedForTeacher = 0
    /// Company ids named by messages but not in the portfolio, dropped (`unknown_companies = drop`).
    public var unknownCompaniesDropped = 0
    /// Mentions past `ingest.max_mentions`, dropped.
    public var mentionsDropped = 0
    /// Partitions whose offsets went back (a new incarnation was started).
    public var offsetRestarts = 0
    /// Offsets past a stored or read one that were never delivered: deleted by retention before
    /// this group read them, compacted away, or a transactional producer's markers and aborted
    /// messages. On a plain news topic, news lost before newsd could read it.
    public var offsetsSkipped = 0
    /// Monotonic seconds when the first message arrived and when the last batch was committed.
    public var firstMessageAt: Double?, lastCommitAt: Double?

    /// Messages per second from the first message to the last commit.
    public var sustainedRate: Double {
        guard let a = firstMessageAt, let b = lastCommitAt, b > a else { return 0 }
        return Double(consumed) / (b - a)
    }

    /// The p-th quantile of batch latency in milliseconds.
    public func latencyMilliseconds(_ p: Double) -> Double {
        guard !batchLatencies.isEmpty else { return 0 }
        let s = batchLatencies.sorted()
        return s[min(s.count - 1, Int(Double(s.count) * p))] * 1000
    }
}

/// Liveness of the parts the pipeline depends on (for `/health` and metrics).
public struct HealthState: Sendable {
    /// Subscribed and looping.
    public var running = false
    /// librdkafka reports no transport error.
    public var kafkaUp = true
    /// The last Postgres attempt succeeded.
    public var postgresUp = true
    /// Partitions held.
    public var assignedPartitions = 0
}

/// The ingest loop: consume a micro-batch (size- and time-bounded), parse and link, classify with
/// the active student, write everything with the next offsets in one transaction, commit offsets
/// to Kafka for lag tools, repeat. It runs on its own thread: every call in it blocks (librdkafka
/// poll, libpq, BLAS), so none of it touches Swift's cooperative pool. The write runs behind, on a
/// second thread (`WriteBehind`): while batch N is written, batch N+1 is read and classified. At
/// most one batch is being written and one prepared (back-pressure: a slow database slows
/// reading), and librdkafka's prefetch queue is bounded. Rebalances, offset restarts and stops
/// wait for the write in flight, so offsets are still stored only with their rows.
public final class IngestPipeline: Sendable {
    /// Everything the loop needs.
    public struct Settings: Sendable {
        public var configuration: NewsdConfiguration
        /// Extra librdkafka consumer properties (tests lower timeouts here).
        public var consumerProperties: [String: String] = [:]
        public init(configuration: NewsdConfiguration) { self.configuration = configuration }
    }

    private let settings: Settings
    private let logger: Logger
    private let parser: MessageParser
    /// The portfolio's linker; a reload swaps it between batches.
    private let linkerBox: LockedValue<CompanyLinker>
    /// The teacher selection policy in force; a reload replaces it between batches.
    private let teacherPolicy: LockedValue<NewsdConfiguration.Teacher>
    /// Turns of the loop, and retries of a failing write: the watchdog pings systemd only while
    /// this moves, so a loop blocked in a call (a lock wait, a hung connection) gets restarted.
    private let progressCounter = LockedValue<UInt64>(0)
    /// Batches written by this process (the `batch` field of the log lines of a batch).
    private let batchSequence = LockedValue<UInt64>(0)
    /// The daemon's metrics.
    public let metrics: NewsdMetrics
    /// Margins of the last 1,000 predictions (low-confidence share).
    private let recentMargins = LockedValue<[Float]>([])
    /// The model serving; the model watcher swaps promoted models into it.
    public let serving: ServingModel
    private let stopRequested = LockedValue(false)
    private let stats = LockedValue(IngestStatistics())
    private let healthState = LockedValue(HealthState())
    /// Current health.
    public var health: HealthState { healthState.withLock { $0 } }
    private let stopDeadlineValue = LockedValue<Date?>(nil)
    /// Cancels the store's statement in flight (see `requestStop`).
    private let writeCanceller = LockedValue<PostgresCanceller?>(nil)
    private var stopDeadline: Date? { stopDeadlineValue.withLock { $0 } }
    /// Called once the consumer is subscribed (readiness).
    public var onReady: @Sendable () -> Void {
        get { readyHandler.value }
        set { readyHandler.withLock { $0 = newValue } }
    }
    private let readyHandler = LockedValue<@Sendable () -> Void>({})

    /// A pipeline serving `model` with the portfolio's linker.
    public init(settings: Settings, model: StudentModel, companies: [Company], logger: Logger, metrics: NewsdMetrics = NewsdMetrics()) {
        self.settings = settings
        self.logger = logger
        self.metrics = metrics
        teacherPolicy = LockedValue(settings.configuration.teacher)
        let i = settings.configuration.ingest
        var limits = MessageParser.Limits()
        limits.textBytes = i.maxTextBytes
        limits.idBytes = i.maxIdBytes
        limits.sourceBytes = i.maxSourceBytes
        limits.companyIdBytes = i.maxCompanyIdBytes
        limits.companies = i.maxCompanies
        self.parser = MessageParser(limits: limits)
        linkerBox = LockedValue(CompanyLinker(companies))
        self.serving = ServingModel(model)
        metrics.set("newsd_model_info", [("version", model.version)], 1)
    }

    /// Replaces the portfolio (SIGHUP reload); the next batch links against it.
    public func setPortfolio(_ companies: [Company]) { linkerBox.withLock { $0 = CompanyLinker(companies) } }

    /// Replaces the teacher selection policy (thresholds, sampling, budget; SIGHUP reload).
    public func setTeacherPolicy(_ policy: NewsdConfiguration.Teacher) { teacherPolicy.withLock { $0 = policy } }

    /// Moves while the loop makes progress (see `progressCounter`).
    public var progress: UInt64 { progressCounter.value }

    private func beat() { progressCounter.withLock { $0 &+= 1 } }

    /// Current totals.
    public var statistics: IngestStatistics { stats.withLock { $0 } }

    /// The model serving now.
    public var activeModel: StudentModel { serving.model }

    /// Asks the loop to stop: it finishes the batch in flight (within the shutdown bound), leaves
    /// the group and returns.
    /// A write still running at the bound (waiting on a lock, a server that stopped answering)
    /// is cancelled then: its offsets are not committed, so nothing is lost.
    public func requestStop() {
        let bound = settings.configuration.ingest.shutdownTimeoutSeconds.value
        let first = stopDeadlineValue.withLock { deadline -> Bool in
            defer { deadline = deadline ?? Date().addingTimeInterval(bound) }
            return deadline == nil
        }
        stopRequested.withLock { $0 = true }
        if first {
            let canceller = writeCanceller
            // Again a second later: a write that was reconnecting at the bound runs on the new connection.
            for delay in [bound, bound + 1] { DispatchQueue.global().asyncAfter(deadline: .now() + delay) { canceller.cancelInBackground() } }
        }
    }

    private var stopping: Bool { stopRequested.withLock { $0 } }

    /// Whether a stop was requested.
    public var isStopping: Bool { stopping }

    /// Runs the loop on the calling thread until `requestStop`.
    public func run() throws {
        let c = settings.configuration
        var props = c.kafka.properties
        props["session.timeout.ms"] = props["session.timeout.ms"] ?? String(c.kafka.sessionTimeoutMs)
        props["auto.offset.reset"] = c.kafka.autoOffsetReset.rawValue
        props["queued.max.messages.kbytes"] = props["queued.max.messages.kbytes"] ?? "16384"
        if let secret = Secrets.value("KAFKA_SASL_PASSWORD") { props["sasl.password"] = secret }
        for (k, v) in settings.consumerProperties { props[k] = v }
        let consumer = try KafkaConsumer(brokers: c.kafka.brokers, groupID: c.kafka.groupID, properties: props)
        let store = IngestStore(url: c.postgres.url, groupID: c.kafka.groupID, maxBackoff: c.postgres.maxBackoffSeconds.value, logger: logger,
                                statementCanceller: writeCanceller)
        store.onFailure = { [stats, healthState, metrics, self] error in
            stats.withLock { $0.databaseFailures += 1 }
            healthState.withLock { $0.postgresUp = false }
            metrics.increment("newsd_postgres_errors_total", [("class", Self.errorClass(error))])
            beat()   // retrying is progress: a restart would not bring Postgres back
        }
        store.onDataError = { [metrics] error in metrics.increment("newsd_postgres_errors_total", [("class", Self.errorClass(error))]) }
        var pending: [KafkaRecord] = []
        // Writes run behind on their own thread; they use `store` (one connection), so every other
        // use of it below first waits for the write in flight.
        let writer = WriteBehind(name: "newsd-write")
        // The last offset read per assigned partition (the stored next offset - 1 right after the
        // seek): a record at or below it means the partition's offsets went back.
        var positions: [TopicPartition: Int64] = [:]
        consumer.onAssign = { [logger] partitions in
            writer.waitIdle()   // the stored offsets must include the batch being written
            let offsets = try store.storedOffsets(partitions, until: Date().addingTimeInterval(30))
            positions = offsets.mapValues { $0 - 1 }
            logger.info("partitions assigned", metadata: ["partitions": "\(partitions.map(\.description).sorted())",
                                                          "stored_offsets": "\(offsets.count)"])
            return offsets
        }
        consumer.onRevoke = { [logger] partitions in
            // Messages read but not yet written are dropped: the next owner starts from the offsets
            // stored with the last written batch, so they are processed exactly once, there. The
            // batch being written finishes first: its rows and offsets land before the next owner
            // reads the offsets (a failed write leaves its offsets unstored, so the owner redoes it).
            writer.waitIdle()
            let revoked = Set(partitions)
            let before = pending.count
            pending.removeAll { revoked.contains($0.topicPartition) }
            positions = positions.filter { !revoked.contains($0.key) }
            logger.info("partitions revoked", metadata: ["partitions": "\(partitions.map(\.description).sorted())",
                                                         "dropped_unwritten": "\(before - pending.count)"])
        }
        // Leave the group on every exit, errors included (a consumer closed only by deinit cannot
        // answer its last revocation).
        defer { consumer.close() }
        // Runs before the consumer closes: the last batch is written (or has failed) by then.
        defer { writer.waitIdle(); writer.close() }
        try consumer.subscribe(c.kafka.topics)
        logger.info("consuming", metadata: ["topics": "\(c.kafka.topics)", "group": "\(c.kafka.groupID)", "brokers": "\(c.kafka.brokers)"])
        onReady()
        // Teacher sampling state belongs to the writes (one at a time, on the writer's thread).
        let teacher = TeacherSamplingBox(TeacherSampling(selector: c.teacher.baseURL.isEmpty ? nil : TeacherSelector(policy: c.teacher)))
        healthState.withLock { $0.running = true }
        defer { healthState.withLock { $0.running = false } }
        var lastBrokerError: String?
        var lagSeries: Set<TopicPartition> = []
        let maxMessages = c.ingest.batchMaxMessages, maxWait = Double(c.ingest.batchMaxWaitMs) / 1000
        while !stopping {
            // 1. Collect a micro-batch: up to maxMessages, or maxWait after its first message.
            let pollStart = monotonicSeconds()
            var firstAt: Double?
            while pending.count < maxMessages && !stopping {
                let remaining = firstAt.map { maxWait - (monotonicSeconds() - $0) } ?? 0.5
                if firstAt != nil && remaining <= 0 { break }
                if let record = try consumer.poll(timeout: max(0.001, min(remaining, 0.5))) {
                    if firstAt == nil { firstAt = monotonicSeconds() }
                    pending.append(record)
                } else if firstAt == nil {
                    break   // idle: go round (checks stop, assignment errors)
                }
            }
            // A turn is progress only while no write is in flight: a write that hangs (a lock, a
            // dead connection) must stop the watchdog's pings although this loop still turns.
            // Writes beat when they end, and while they retry.
            if !writer.isBusy { beat() }
            metrics.increment("newsd_ingest_loop_iterations_total")
            if let e = consumer.lastError, e.message != lastBrokerError {
                logger.warning("kafka: \(e.message); librdkafka keeps reconnecting")
                metrics.increment("newsd_broker_errors_total", [("error", e.name)])
                lastBrokerError = e.message
            } else if consumer.lastError == nil, lastBrokerError != nil {
                logger.info("kafka: recovered")
                lastBrokerError = nil
            }
            let kafkaUp = consumer.lastError == nil, partitions = consumer.assignment.count
            healthState.withLock { $0.kafkaUp = kafkaUp; $0.assignedPartitions = partitions }
            metrics.set("newsd_kafka_up", kafkaUp ? 1 : 0)
            metrics.set("newsd_assigned_partitions", Double(partitions))
            publishLag(consumer, positions: positions, published: &lagSeries)
            if let e = consumer.assignmentError {
                logger.error("cannot read stored offsets; rejoining the group", metadata: ["error": "\(e)"])
                Thread.sleep(forTimeInterval: 1)
                try consumer.resubscribe(c.kafka.topics)
                continue
            }
            stats.withLock { $0.pollSeconds += monotonicSeconds() - pollStart }
            guard !pending.isEmpty else { continue }
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            metrics.observe("newsd_stage_duration_seconds", [("stage", "poll")], monotonicSeconds() - pollStart)
            do {
                try process(batch, store: store, consumer: consumer, startedAt: firstAt ?? pollStart, writer: writer, teacher: teacher,
                            positions: &positions)
            } catch let e as PostgresError where e.isRetriable && stopping {
                stoppedUnwritten(e)
            }
        }
        do { try writer.drain() } catch let e as PostgresError where e.isRetriable && stopping { stoppedUnwritten(e) }
        consumer.close()
        logger.info("left the consumer group")
    }

    /// Shutting down while Postgres is away: nothing of the batch in hand was committed, its
    /// offsets were not stored, so the next run consumes it again. Nothing is lost.
    private func stoppedUnwritten(_ error: PostgresError) {
        logger.warning("stopping before a batch could be written; it will be consumed again", metadata: ["error": "\(error)"])
    }

    /// Prepares a batch on the ingest thread (offset checks, parse, link, classify) and hands its
    /// write to `writer`.
    private func process(_ records: [KafkaRecord], store: IngestStore, consumer: KafkaConsumer, startedAt: Double,
                         writer: WriteBehind, teacher: TeacherSamplingBox, positions: inout [TopicPartition: Int64]) throws {
        // 1b. Each record's offset against the last one read from its partition (right after an
        // assignment, the stored next offset - 1), one lookup per record.
        var keys: [TopicPartition] = []
        keys.reserveCapacity(records.count)
        var restarts = 0, skipped: [String: Int] = [:]
        for r in records {
            let tp = r.topicPartition
            if let last = positions[tp], r.offset != last + 1 {
                if r.offset > last + 1 {
                    // Ahead: the broker no longer had the ones between (retention ran while the group
                    // lagged or was down), or never delivers them (compaction, transaction markers: a
                    // gap of one per transaction, not logged).
                    let gap = Int(r.offset - last - 1)
                    skipped[tp.topic, default: 0] += gap
                    if gap > 1 {
                        logger.warning("partition offsets skipped ahead: newsd never read those messages (deleted by retention while the group lagged or was down, compacted away, aborted transactions, or auto_offset_reset = latest)",
                                       metadata: ["topic": "\(tp.topic)", "partition": "\(tp.partition)", "last_offset": "\(last)",
                                                  "offset": "\(r.offset)", "skipped": "\(gap)"])
                    }
                } else {
                    // Back (topic recreated, broker data lost): the partition starts a new incarnation
                    // and its messages are stored under a new key instead of being dropped as replays
                    // of the stored ones. Detected per record, so a batch may span the restart.
                    try writer.drain()   // the store is the writer's while it writes
                    let n = try store.startIncarnation(tp, reason: "offset went back from \(last) to \(r.offset)", until: { [self] in stopDeadline })
                    restarts += 1
                    metrics.increment("newsd_partition_offset_restarts_total")
                    logger.error("partition offsets went back: topic recreated or broker data lost; its new messages are stored apart",
                                 metadata: ["topic": "\(tp.topic)", "partition": "\(tp.partition)", "last_offset": "\(last)",
                                            "offset": "\(r.offset)", "incarnation": "\(n)", "stored_as": "\(store.storageKey(tp).topic)"])
                }
            }
            positions[tp] = r.offset
            keys.append(store.storageKey(tp))
        }
        let student = activeModel
        let linker = linkerBox.value
        let batchID = batchSequence.withLock { $0 += 1; return $0 }
        var log = logger
        log[metadataKey: "batch"] = "\(batchID)"
        // 2. Parse and link.
        let t0 = monotonicSeconds()
        var unknownDropped = 0, mentionsDropped = 0
        var parsed: [(KafkaRecord, Result<NewsItem, RejectReason>)] = records.map { record in
            (record, parser.parse(record.value).flatMap { checkCompanies($0, linker: linker, dropped: &unknownDropped) })
        }
        var texts: [String] = []
        for (_, r) in parsed { if case let .success(item) = r { texts.append(item.text) } }
        let t1 = monotonicSeconds()
        // 3. Classify the accepted texts in one call (chunks spread over the model's threads).
        let cacheBefore = student.cache.counts, usageBefore = student.usage.counts
        let predictions = student.predict(texts, batchSize: settings.configuration.model.batchSize)
        let cacheAfter = student.cache.counts, usageAfter = student.usage.counts
        metrics.increment("newsd_student_cache_lookups_total", by: cacheAfter.lookups - cacheBefore.lookups)
        metrics.increment("newsd_student_cache_hits_total", by: cacheAfter.hits - cacheBefore.hits)
        metrics.increment("newsd_student_encoded_total", by: usageAfter.sentences - usageBefore.sentences)
        metrics.increment("newsd_student_encoder_layers_total", by: usageAfter.layers - usageBefore.layers)
        let t2 = monotonicSeconds()
        var k = 0
        var out: [ProcessedMessage] = []
        out.reserveCapacity(parsed.count)
        for i in parsed.indices {
            let (record, r) = parsed[i]
            let key = keys[i]
            switch r {
            case let .success(item):
                var mentions = linker.link(item.text, given: item.companies)
                let cap = settings.configuration.ingest.maxMentions
                if mentions.count > cap { mentionsDropped += mentions.count - cap; mentions.removeLast(mentions.count - cap) }
                out.append(ProcessedMessage(topicPartition: key, offset: record.offset, raw: record.value,
                                            outcome: .accepted(item, predictions[k], mentions)))
                k += 1
            case let .failure(reason):
                out.append(ProcessedMessage(topicPartition: key, offset: record.offset, raw: record.value,
                                            outcome: .rejected(reason.description)))
            }
        }
        var rejectedByParse: [String: [String: Int]] = [:]   // topic -> reason -> count
        for (i, (_, r)) in parsed.enumerated() {
            if case let .failure(reason) = r { rejectedByParse[keys[i].topic, default: [:]][reason.kind.rawValue, default: 0] += 1 }
        }
        parsed.removeAll()
        // 4. Behind, on the writer's thread, while the next batch is read and classified.
        let prepared = (out: out, rejectedByParse: rejectedByParse)
        try writer.submit { [self] in
            let w0 = monotonicSeconds()   // the write's own time starts here, not at the wait for the previous one
            store.logger = log
            defer { store.logger = logger }
            var out = prepared.out
            try chooseForTeacher(&out, student: student, store: store, teacher: &teacher.state)
            // Write everything and the next offsets in one transaction.
            let result = try store.write(out, modelVersion: student.version, labels: student.labels) { [self] in stopDeadline }
            healthState.withLock { $0.postgresUp = true }
            let t3 = monotonicSeconds()
            record(out, rejectedByParse: prepared.rejectedByParse, result: result, model: student, startedAt: startedAt, stages: (t0, t1, t2, w0, t3))
            // 5. Tell Kafka too (lag tools); Postgres stays the authority.
            var next: [TopicPartition: Int64] = [:]
            for r in records { next[r.topicPartition] = max(next[r.topicPartition] ?? 0, r.offset + 1) }
            consumer.commit(next)
            stats.withLock { s in
                s.consumed += records.count
                s.stored += result.inserted
                s.rejected += result.rejected
                s.queuedForTeacher += result.queued
                s.unknownCompaniesDropped += unknownDropped
                s.offsetRestarts += restarts
                s.offsetsSkipped += skipped.values.reduce(0, +)
                s.mentionsDropped += mentionsDropped
                s.batches += 1
                s.parseSeconds += t1 - t0
                s.classifySeconds += t2 - t1
                s.writeSeconds += t3 - w0
                s.batchLatencies.append(t3 - startedAt)
                if s.firstMessageAt == nil { s.firstMessageAt = startedAt }
                s.lastCommitAt = t3
                if s.batchLatencies.count > 10_000 { s.batchLatencies.removeFirst(s.batchLatencies.count - 10_000) }
            }
            // Counted with the batch's commit, like the statistics: a gap in a batch that never
            // commits (a crash) is found again by the next run and counted there, once.
            for (topic, n) in skipped { metrics.increment("newsd_offsets_skipped_total", [("topic", topic)], by: n) }
            metrics.increment("newsd_unknown_companies_total", by: unknownDropped)
            metrics.increment("newsd_mentions_dropped_total", by: mentionsDropped)
            log.debug("batch written", metadata: ["messages": "\(records.count)", "stored": "\(result.inserted)",
                                                  "rejected": "\(result.rejected)", "model": "\(student.version)"])
            beat()
        }
        if !settings.configuration.ingest.writeBehind { try writer.drain() }
    }

    /// The metrics of one written batch.
    private func record(_ out: [ProcessedMessage], rejectedByParse: [String: [String: Int]], result: BatchWriteResult, model: StudentModel,
                        startedAt: Double, stages t: (Double, Double, Double, Double, Double)) {
        var consumed: [String: Int] = [:], stored: [String: Int] = [:], labels: [String: Int] = [:]
        var lowConfidence = 0, margins: [Float] = []
        let threshold = Float(teacherPolicy.value.marginThreshold)
        for m in out {
            consumed[m.topicPartition.topic, default: 0] += 1
            if case let .accepted(_, p, _) = m.outcome {
                stored[m.topicPartition.topic, default: 0] += 1
                labels[p.label, default: 0] += 1
                margins.append(p.margin)
                if p.margin < threshold { lowConfidence += 1 }
            }
        }
        for (topic, n) in consumed { metrics.increment("newsd_messages_consumed_total", [("topic", topic)], by: n) }
        // Replays of stored messages are skipped by the database: count what it inserted.
        let storedTotal = stored.values.reduce(0, +)
        for (topic, n) in stored { metrics.increment("newsd_items_stored_total", [("topic", topic)], by: storedTotal > 0 ? n * result.inserted / storedTotal : 0) }
        var parseRejected = 0
        for (topic, reasons) in rejectedByParse {
            for (reason, n) in reasons { metrics.increment("newsd_messages_rejected_total", [("topic", topic), ("reason", reason)], by: n); parseRejected += n }
        }
        if result.rejected > parseRejected, let topic = out.first?.topicPartition.topic {
            metrics.increment("newsd_messages_rejected_total", [("topic", topic), ("reason", RejectReason.Kind.database.rawValue)], by: result.rejected - parseRejected)
        }
        for (label, n) in labels { metrics.increment("newsd_predictions_total", [("label", label), ("model", model.version)], by: n) }
        metrics.increment("newsd_predictions_low_confidence_total", by: lowConfidence)
        let recent = recentMargins.withLock { r -> [Float] in
            r.append(contentsOf: margins)
            if r.count > 1000 { r.removeFirst(r.count - 1000) }
            return r
        }
        if !recent.isEmpty { metrics.set("newsd_low_confidence_share", Double(recent.lazy.filter { $0 < threshold }.count) / Double(recent.count)) }
        metrics.increment("newsd_batches_total")
        metrics.observe("newsd_batch_size_messages", Double(out.count))
        metrics.observe("newsd_stage_duration_seconds", [("stage", "parse")], t.1 - t.0)
        metrics.observe("newsd_stage_duration_seconds", [("stage", "classify")], t.2 - t.1)
        metrics.observe("newsd_stage_duration_seconds", [("stage", "store")], t.4 - t.3)
        metrics.observe("newsd_batch_latency_seconds", t.4 - startedAt)
        metrics.increment("newsd_teacher_items_queued_total", by: result.queued)
    }

    /// Consumer lag per assigned partition, from librdkafka's cached high watermarks (no broker
    /// round trip); series of partitions no longer assigned are removed.
    private func publishLag(_ consumer: KafkaConsumer, positions: [TopicPartition: Int64], published: inout Set<TopicPartition>) {
        var now: Set<TopicPartition> = []
        for tp in consumer.assignment {
            guard let high = consumer.highWatermark(tp), high >= 0 else { continue }
            let next = positions[tp].map { $0 + 1 } ?? high
            metrics.set("newsd_consumer_lag_messages", [("topic", tp.topic), ("partition", "\(tp.partition)")], Double(max(0, high - next)))
            now.insert(tp)
        }
        for gone in published.subtracting(now) {
            metrics.remove("newsd_consumer_lag_messages", [("topic", gone.topic), ("partition", "\(gone.partition)")])
        }
        published = now
    }

    /// The SQLSTATE class of a Postgres error (`08` connection, `57` shutdown, ...), or `connection`.
    static func errorClass(_ error: Error) -> String {
        guard let e = error as? PostgresError, let state = e.sqlState, state.count >= 2 else { return "connection" }
        return String(state.prefix(2))
    }

    /// Company ids the message names that are not in the portfolio: dropped (counted) or the
    /// message refused, per `ingest.unknown_companies`. Without a portfolio every id is kept.
    private func checkCompanies(_ item: NewsItem, linker: CompanyLinker, dropped: inout Int) -> Result<NewsItem, RejectReason> {
        guard linker.hasCompanies, !item.companies.isEmpty else { return .success(item) }
        let unknown = item.companies.filter { !linker.isKnown($0) }
        guard !unknown.isEmpty else { return .success(item) }
        switch settings.configuration.ingest.unknownCompanies {
        case .reject:
            return .failure(RejectReason("companies names \(unknown.count) id(s) not in the portfolio, e.g. \(unknown[0].prefix(40))", kind: .unknownCompany))
        case .drop:
            dropped += unknown.count
            var kept = item
            kept.companies = item.companies.filter(linker.isKnown)
            return .success(kept)
        }
    }

    /// Marks the items the teacher should see (uncertainty sampling; cold start while the student
    /// is an untrained base; nothing once the day's budget is spent).
    private func chooseForTeacher(_ out: inout [ProcessedMessage], student: StudentModel, store: IngestStore,
                                  teacher teacherState: inout TeacherSampling) throws {
        guard var selector = teacherState.selector else { return }
        let t = teacherPolicy.value
        if t != selector.policy {
            let reloaded = TeacherSelector(policy: t)
            reloaded.inheritShift(from: selector)
            selector = reloaded
            teacherState.selector = selector
        }
        if monotonicSeconds() - teacherState.refreshedAt > 5 {
            let state = try store.teacherState(until: { [self] in stopDeadline })
            (teacherState.queued, teacherState.spent, teacherState.refreshedAt) = (state.queued, state.spent, monotonicSeconds())
        }
        let accepted = out.indices.filter { if case .accepted = out[$0].outcome { return true }; return false }
        var margins: [Float] = [], entropies: [Float] = []
        for i in accepted { if case let .accepted(_, p, _) = out[i].outcome { margins.append(p.margin); entropies.append(p.entropy) } }
        let untrained = student.manifest == nil
        let coldStartRemaining = untrained ? max(0, t.coldStartItems - teacherState.queued) : 0
        let budgetExhausted = t.dailyBudgetUSD > 0 && teacherState.spent >= t.dailyBudgetUSD
        if !untrained, let change = selector.observeShift(margins: margins, model: student.version) {
            // The news changed kind (or the loop caught up with it): more of it goes to the teacher.
            let d = selector.shift
            metrics.set("newsd_shift_active", change == .began ? 1 : 0)
            if change == .began { metrics.increment("newsd_shift_detected_total") }
            logger.notice(change == .began ? "shift detected: the student is unsure of far more items than before" : "shift over",
                          metadata: ["uncertain_share_recent": "\(String(format: "%.3f", d.recent))", "uncertain_share_baseline": "\(String(format: "%.3f", d.baseline))",
                                     "model": "\(student.version)", "teacher_max_share": "\(selector.currentMaxShare)"])
        } else if !selector.shift.isActive {
            metrics.set("newsd_shift_active", 0)
        }
        let reasons = selector.select(margins: margins, entropies: entropies, coldStartRemaining: coldStartRemaining, budgetExhausted: budgetExhausted)
        for (k, i) in accepted.enumerated() { out[i].teach = reasons[k] }
        teacherState.queued += reasons.lazy.filter { $0 != nil }.count
    }

}

/// The teacher sampling state, owned by the writes (they run one at a time on the writer's thread).
/// `@unchecked Sendable`: no lock; only the write jobs touch it, and `WriteBehind` runs them one
/// after another with a lock handoff between them.
final class TeacherSamplingBox: @unchecked Sendable {
    var state: TeacherSampling
    init(_ state: TeacherSampling) { self.state = state }
}

/// The ingest loop's teacher sampling state: the selector, and the queue size and today's spend
/// read from Postgres every few seconds.
struct TeacherSampling {
    /// Nil when no teacher is configured.
    var selector: TeacherSelector?
    var queued = 0
    var spent = 0.0
    var refreshedAt = -1e9
}
