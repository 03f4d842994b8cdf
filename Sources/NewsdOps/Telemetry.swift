import CoreMetrics
import Foundation
import NewsdSystem
import Prometheus

/// Every metric newsd exports: its name, type, help text and (for histograms) buckets, in one
/// table. The names are the contract with `ops/newsd.rules.yml` and the Grafana dashboard (a test
/// checks both against this table and against a live scrape).
public enum MetricCatalog {
    /// A metric's kind as Prometheus sees it.
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    /// One metric family.
    public struct Entry: Sendable {
        /// Prometheus name.
        public let name: String
        /// Counter, gauge or histogram.
        public let kind: Kind
        /// `# HELP` text.
        public let help: String
        /// Label names (documentation; the values come with each observation).
        public let labels: [String]
        /// Upper bounds of a histogram's buckets (seconds for durations).
        public let buckets: [Double]

        init(_ name: String, _ kind: Kind, _ help: String, labels: [String] = [], buckets: [Double] = []) {
            self.name = name; self.kind = kind; self.help = help; self.labels = labels; self.buckets = buckets
        }
    }

    /// Stage latencies: 0.5 ms to 30 s.
    static let latencyBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    /// The table.
    public static let entries: [Entry] = [
        // Ingest.
        Entry("newsd_messages_consumed_total", .counter, "Kafka messages consumed and written (stored or rejected).", labels: ["topic"]),
        Entry("newsd_items_stored_total", .counter, "News items stored with a prediction.", labels: ["topic"]),
        Entry("newsd_messages_rejected_total", .counter, "Messages stored in rejected_messages, by reason.", labels: ["topic", "reason"]),
        Entry("newsd_batches_total", .counter, "Micro-batches written."),
        Entry("newsd_batch_size_messages", .histogram, "Messages per micro-batch.", buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]),
        Entry("newsd_stage_duration_seconds", .histogram, "Time per ingest stage and batch (poll, parse, classify, store).",
              labels: ["stage"], buckets: latencyBuckets),
        Entry("newsd_batch_latency_seconds", .histogram, "Batch latency from its first message read to its commit.", buckets: latencyBuckets),
        Entry("newsd_consumer_lag_messages", .gauge, "Messages behind the partition's high watermark.", labels: ["topic", "partition"]),
        Entry("newsd_assigned_partitions", .gauge, "Partitions assigned to this host."),
        Entry("newsd_ingest_loop_iterations_total", .counter, "Turns of the ingest loop (it turns at least twice a second while healthy)."),
        Entry("newsd_predictions_total", .counter, "Predictions stored, by label and model version.", labels: ["label", "model"]),
        Entry("newsd_predictions_low_confidence_total", .counter, "Predictions whose margin is under teacher.margin_threshold."),
        Entry("newsd_student_cache_lookups_total", .counter, "Texts looked up in the serving model's prediction cache (model.cache_entries)."),
        Entry("newsd_student_cache_hits_total", .counter, "Texts answered from the prediction cache (exact repeats), without an encoder pass."),
        Entry("newsd_student_encoded_total", .counter, "Texts run through the serving model's encoder (cache misses)."),
        Entry("newsd_student_encoder_layers_total", .counter, "Encoder layers run for them; divided by newsd_student_encoded_total, the mean depth (below the layer count with early exit)."),
        Entry("newsd_low_confidence_share", .gauge, "Share of the last 1,000 predictions under teacher.margin_threshold."),
        Entry("newsd_partition_offset_restarts_total", .counter, "Partitions whose offsets went back (topic recreated or broker data lost)."),
        Entry("newsd_offsets_skipped_total", .counter, "Offsets never read past a stored or read one: deleted by retention before this group read them, compacted away, transaction markers and aborted transactions, or passed over by auto_offset_reset = latest. On a plain news topic, news lost before newsd could read it.", labels: ["topic"]),
        Entry("newsd_unknown_companies_total", .counter, "Company ids named by messages but not in the portfolio, dropped."),
        Entry("newsd_mentions_dropped_total", .counter, "Mentions past ingest.max_mentions, dropped."),
        Entry("newsd_teacher_items_queued_total", .counter, "Items this host put on the teacher queue."),
        Entry("newsd_shift_active", .gauge, "1 while the student is unsure of far more items than its baseline (the news changed kind): more goes to the teacher and training starts early."),
        Entry("newsd_shift_detected_total", .counter, "Shifts detected (see newsd_shift_active)."),
        Entry("newsd_postgres_errors_total", .counter, "Postgres failures (each retried or bisected), by SQLSTATE class.", labels: ["class"]),
        Entry("newsd_broker_errors_total", .counter, "Broker errors librdkafka reported, by error name.", labels: ["error"]),
        Entry("newsd_kafka_up", .gauge, "1 unless librdkafka reports the brokers unreachable."),
        Entry("newsd_postgres_up", .gauge, "1 while Postgres answers the readiness probe."),
        Entry("newsd_ready", .gauge, "1 while /readyz answers 200."),
        // Model.
        Entry("newsd_model_info", .gauge, "The student model serving (value 1), by version.", labels: ["version"]),
        Entry("newsd_model_active_seq", .gauge, "Registry sequence number of the active model (it goes down on a rollback)."),
        Entry("newsd_model_gate_metric", .gauge, "The active model's gate figures from its promotion (f1, negative recall, ...).", labels: ["metric"]),
        Entry("newsd_model_swaps_total", .counter, "Models swapped in while running."),
        Entry("newsd_model_swap_failures_total", .counter, "Promoted models this host refused (corrupt or unloadable); it kept its model."),
        Entry("newsd_training_runs_total", .counter, "Training runs, by outcome (promoted, rejected, failed).", labels: ["outcome"]),
        Entry("newsd_training_duration_seconds", .histogram, "Duration of training runs.", buckets: [10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200]),
        // Teacher.
        Entry("newsd_teacher_requests_total", .counter, "Teacher HTTP requests, by status (HTTP code or error kind).", labels: ["status"]),
        Entry("newsd_teacher_errors_total", .counter, "Failed teacher requests, by kind (rate_limited, server, client, timeout, connection, unparsable).",
              labels: ["kind"]),
        Entry("newsd_teacher_tokens_total", .counter, "Tokens reported by the teacher, by kind (prompt, completion).", labels: ["kind"]),
        Entry("newsd_teacher_spend_usd_total", .counter, "Teacher spend of this host, US dollars."),
        Entry("newsd_teacher_items_total", .counter, "Items the teacher worker finished, by outcome.", labels: ["outcome"]),
        Entry("newsd_teacher_queue_items", .gauge, "Teacher queue items by status (whole group, from Postgres).", labels: ["status"]),
        Entry("newsd_teacher_breaker_state", .gauge, "Teacher circuit breaker: 0 closed, 1 half-open, 2 open."),
        Entry("newsd_teacher_budget_exhausted", .gauge, "1 while today's teacher budget is spent."),
        Entry("newsd_teacher_spend_today_usd", .gauge, "Teacher spend today (UTC), whole group, US dollars."),
        Entry("newsd_teacher_daily_budget_usd", .gauge, "teacher.daily_budget_usd as in force (reloadable)."),
        Entry("newsd_teacher_requests_per_minute_limit", .gauge, "teacher.requests_per_minute as in force (reloadable)."),
        Entry("newsd_cost_per_million_sentences_usd", .gauge, "Teacher spend per million sentences stored, whole group (the running cost of the loop)."),
        // Alerts and analysts.
        Entry("newsd_alerts_raised_total", .counter, "Negative-shift alerts this host raised (once across hosts), by rule and severity.",
              labels: ["rule", "severity"]),
        Entry("newsd_alerts_suppressed_total", .counter, "Alerts suppressed because the teacher contradicted most of their drivers."),
        Entry("newsd_alert_student_errors_total", .counter, "Driver sentences of suppressed alerts the teacher labelled otherwise (student errors)."),
        Entry("newsd_alerts_resolved_total", .counter, "Alerts this host resolved (the share came back)."),
        Entry("newsd_alerts_firing", .gauge, "Alerts firing now (whole group, from Postgres)."),
        Entry("newsd_alert_deliveries_total", .counter, "Alert delivery attempts, by sink and outcome (delivered, retry, rejected).",
              labels: ["sink", "outcome"]),
        Entry("newsd_alert_outbox_pending", .gauge, "Alert deliveries not done yet (whole group)."),
        Entry("newsd_alert_teacher_spend_usd_total", .counter, "Teacher spend of alert verification on this host, US dollars."),
        Entry("newsd_alert_pass_seconds", .histogram, "Duration of one detector pass.", buckets: [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30]),
        Entry("newsd_rollup_pass_seconds", .histogram, "Duration of a rollup pass that recomputed something.", buckets: [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120]),
        Entry("newsd_rollup_hours_total", .counter, "(company, hour) rollup rows recomputed."),
        // Operations.
        Entry("newsd_config_reloads_total", .counter, "SIGHUP reloads, by result (applied, unchanged, failed).", labels: ["result"]),
        Entry("newsd_watchdog_pings_total", .counter, "WATCHDOG=1 pings sent to systemd."),
        Entry("newsd_process_resident_bytes", .gauge, "Resident set size of the process."),
        Entry("newsd_process_open_fds", .gauge, "Open file descriptors of the process."),
    ]

    static let byName: [String: Entry] = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })
}

/// The metrics of one daemon: swift-metrics handles backed by one Prometheus registry, rendered
/// by `GET /metrics`. Each instance has its own registry (tests run several daemons in one
/// process); nothing touches the global `MetricsSystem`.
public final class NewsdMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    private let factory: CatalogMetricsFactory
    private let counters = LockedValue<[String: CoreMetrics.Counter]>([:])
    private let floatCounters = LockedValue<[String: CoreMetrics.FloatingPointCounter]>([:])
    private let gauges = LockedValue<[String: (gauge: CoreMetrics.Gauge, value: Double)]>([:])
    private let histograms = LockedValue<[String: CoreMetrics.Recorder]>([:])

    /// An empty registry.
    public init() {
        registry = PrometheusCollectorRegistry()
        factory = CatalogMetricsFactory(registry: registry)
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        labels.isEmpty ? name : name + "\u{1}" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: "\u{1}")
    }

    /// The handle of one series, made (and checked against the catalogue) on first use.
    private static func cached<M: Sendable>(_ cache: LockedValue<[String: M]>, _ name: String, _ labels: [(String, String)],
                                            _ kind: MetricCatalog.Kind, make: () -> M) -> M {
        let k = key(name, labels)
        return cache.withLock { c in
            if let m = c[k] { return m }
            checked(name, kind)
            let m = make()
            c[k] = m
            return m
        }
    }

    private static func checked(_ name: String, _ kind: MetricCatalog.Kind) {
        precondition(MetricCatalog.byName[name]?.kind == kind, "metric \(name) is not a \(kind) of the catalog")
    }

    /// Adds `amount` to counter `name` with these labels.
    public func increment(_ name: String, _ labels: [(String, String)] = [], by amount: Int = 1) {
        guard amount > 0 else { return }
        Self.cached(counters, name, labels, .counter) { CoreMetrics.Counter(label: name, dimensions: labels, factory: factory) }.increment(by: amount)
    }

    /// Adds a fractional `amount` (dollars) to counter `name`.
    public func add(_ name: String, _ amount: Double) { add(name, [], amount) }

    /// Adds a fractional `amount` to counter `name` with these labels.
    public func add(_ name: String, _ labels: [(String, String)], _ amount: Double) {
        guard amount > 0 else { return }
        Self.cached(floatCounters, name, labels, .counter) { CoreMetrics.FloatingPointCounter(label: name, dimensions: labels, factory: factory) }
            .increment(by: amount)
    }

    /// Sets gauge `name` with these labels.
    public func set(_ name: String, _ value: Double) { set(name, [], value) }

    /// Sets gauge `name` with these labels.
    public func set(_ name: String, _ labels: [(String, String)], _ value: Double) {
        let k = Self.key(name, labels)
        let g = gauges.withLock { cache -> CoreMetrics.Gauge in
            if let g = cache[k] { cache[k]!.value = value; return g.gauge }
            Self.checked(name, .gauge)
            let g = CoreMetrics.Gauge(label: name, dimensions: labels, factory: factory)
            cache[k] = (g, value)
            return g
        }
        g.record(value)
    }

    /// Removes one labelled series of gauge `name` (a partition no longer assigned, an old model
    /// version), so the scrape does not keep a stale value.
    public func remove(_ name: String, _ labels: [(String, String)]) {
        let k = Self.key(name, labels)
        if let g = gauges.withLock({ $0.removeValue(forKey: k) }) { g.gauge.destroy() }
    }

    /// The sum of every series of gauge `name` (the total lag for the status line).
    public func gaugeSum(_ name: String) -> Double {
        gauges.withLock { cache in
            cache.reduce(0) { sum, entry in
                entry.key == name || entry.key.hasPrefix(name + "\u{1}") ? sum + entry.value.value : sum
            }
        }
    }

    /// Records one observation (seconds for durations) into histogram `name`.
    public func observe(_ name: String, _ value: Double) { observe(name, [], value) }

    /// Records one observation into histogram `name` with these labels.
    public func observe(_ name: String, _ labels: [(String, String)], _ value: Double) {
        Self.cached(histograms, name, labels, .histogram) { CoreMetrics.Recorder(label: name, dimensions: labels, aggregate: true, factory: factory) }
            .record(value)
    }

    /// The exposition text (Prometheus text format 0.0.4).
    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16_384)
        registry.emit(into: &buffer)
        return buffer
    }
}

/// A swift-metrics factory over a Prometheus registry that gives every family its help text and
/// buckets from `MetricCatalog` (the stock factory emits no `# HELP`). Durations are recorded as
/// seconds into value histograms, so every histogram has the same unit.
struct CatalogMetricsFactory: MetricsFactory, Sendable {
    let registry: PrometheusCollectorRegistry

    private func help(_ label: String) -> String { MetricCatalog.byName[label]?.help ?? "" }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(name: label, labels: dimensions, help: help(label))
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(name: label, labels: dimensions, help: help(label))
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(name: label, labels: dimensions, help: help(label)) }
        let buckets = MetricCatalog.byName[label]?.buckets ?? MetricCatalog.latencyBuckets
        return registry.makeValueHistogram(name: label, labels: dimensions, buckets: buckets, help: help(label))
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(name: label, labels: dimensions, help: help(label))
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let buckets = (MetricCatalog.byName[label]?.buckets ?? MetricCatalog.latencyBuckets).map { Duration.seconds($0) }
        return registry.makeDurationHistogram(name: label, labels: dimensions, buckets: buckets, help: help(label))
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
        if let h = handler as? Prometheus.Histogram<Double> { registry.unregisterValueHistogram(h) }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let h = handler as? Prometheus.Histogram<Duration> { registry.unregisterDurationHistogram(h) }
    }
}
